"""The fit report: support and calibration are what they say, the page is complete, and it renders in Chromium."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import diml_inverse
import mechgym
from diml_inverse.report import calibration, context_keys, frequent_joint_actions, training_support
from mechgym import LogitQ
from mechgym.errors import ConfigurationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENV_ID = "mechgym/PublicGoods-v0"  # 3 agents x 7 levels: 49 contexts per agent


@pytest.fixture(scope="module")
def fitted() -> tuple[diml_inverse.FitResult, mechgym.TraceDataset, mechgym.TraceDataset]:
    traces = mechgym.rollout(ENV_ID, LogitQ(alpha=0.25, beta=3.0, epsilon=0.06), 20, 12, seed=0)
    train, test = traces.split(0.8)
    options = {"epochs": 3, "model": "structured", "device": "cpu", "progress": False, "learn_q0": True}
    return diml_inverse.fit(ENV_ID, train, **options), train, test  # type: ignore[arg-type]


class _Intervals:
    """A stand-in bootstrap with the two methods the report reads: the fit's differences plus or minus 0.25."""

    def __init__(self, result: diml_inverse.FitResult) -> None:
        self.result = result

    def payoff_differences(self, joint_actions: torch.Tensor) -> torch.Tensor:
        return self.result.payoff_differences(joint_actions)

    def payoff_differences_interval(
        self, joint_actions: torch.Tensor, level: float = 0.9
    ) -> tuple[torch.Tensor, torch.Tensor]:
        point = self.result.payoff_differences(joint_actions)
        return point - 0.25 * level, point + 0.25 * level


def _off_support_joint(train: mechgym.TraceDataset) -> list[int]:
    support = training_support(train.actions, 7)
    joints = ([int(a), int(b), int(c)] for a, b, c in itertools.product(range(7), repeat=3))
    return next(joint for joint in joints if not support.on_support(np.array(joint)).all())


@pytest.fixture(scope="module")
def page(fitted: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report of the fit: test traces, a stand-in bootstrap at level 0.8, one off-support joint action."""
    result, train, test = fitted
    joints = [*frequent_joint_actions(test, 3).tolist(), _off_support_joint(train)]
    target = tmp_path_factory.mktemp("report") / "fit.html"
    return result.report(target, test, _Intervals(result), traces=train, joint_actions=joints, level=0.8)


def test_context_keys_match_the_others_actions() -> None:
    joints = np.array(list(itertools.product(range(3), repeat=3)))  # every joint action of 3 agents x 3 actions
    keys = context_keys(joints, 3)
    for agent in range(3):
        others = [tuple(np.delete(joint, agent)) for joint in joints]
        same_key = keys[:, agent][:, None] == keys[:, agent][None, :]
        same_others = np.array([[a == b for b in others] for a in others])
        np.testing.assert_array_equal(same_key, same_others)
        assert keys[:, agent].min() == 0 and keys[:, agent].max() == 8


def test_support_counts_the_rounds_the_likelihood_evaluates() -> None:
    actions = np.array([[[0, 0, 0], [1, 0, 0], [2, 2, 2]]])  # the last round's context is never evaluated (Eq. 1)
    support = training_support(actions, 3)
    assert support.n_rounds_seen == 2 and support.n_contexts == 9
    assert support.n_visited == [1, 2, 2]  # agent 0 sees (0, 0) twice; agents 1, 2 see (0, 0) and (1, 0)
    flags = support.on_support(np.array([[1, 0, 0], [0, 2, 2], [2, 0, 0]]))
    np.testing.assert_array_equal(flags, [[True, True, True], [False, False, False], [True, False, False]])


def test_calibration_matches_the_learners_own_step_by_step_policy(fitted: tuple) -> None:
    result, train, _ = fitted
    calib = calibration(result, train)
    assert calib.predicted.shape == calib.observed.shape == (train.n_rounds - 1, 7)
    np.testing.assert_allclose(calib.observed.sum(1), 1.0)
    actions, learner, mechanism = train.actions_tensor(), result.learner, result.mechanism
    state = result.q0.expand(actions.shape[0], 3, 7).clone()  # the learned Q(1)
    with torch.no_grad():
        for t in range(train.n_rounds - 1):  # Algorithm 1, one round at a time
            state = learner.update(state, mechanism.counterfactual_payoffs(actions[:, t]), actions[:, t])
            expected = learner.log_policy(state).exp().mean(dim=(0, 1))
            np.testing.assert_allclose(calib.predicted[t], expected.double().numpy(), rtol=1e-5, atol=1e-6)
            played = torch.nn.functional.one_hot(actions[:, t + 1], 7).double().mean(dim=(0, 1))
            np.testing.assert_allclose(calib.observed[t], played.numpy())
    assert calib.noise_floor > 0 and calib.max_abs_error == pytest.approx(
        np.abs(calib.predicted - calib.observed).max()
    )


def test_page_has_every_section_and_flags_off_support_contexts(page: Path) -> None:
    text = page.read_text()
    for heading in ("Learning curves", "Calibration", "Support", "Payoff differences"):
        assert f"<h2>{heading}</h2>" in text
    assert text.count("<img") == 3  # learning curves, calibration, support
    assert text.count("OFF-SUPPORT") >= 1 and "never visited by the training traces" in text
    assert text.count("<tr class='off'>") == text.count("OFF-SUPPORT")
    assert "held-out test traces" in text


def test_bootstrap_intervals_enter_the_table(page: Path) -> None:
    text = page.read_text()
    assert "80% bootstrap intervals" in text
    assert "point estimate: 0." in text  # the stand-in's point estimate is the fit's
    assert text.count("<span class='ci'>[") == 4 * 3 * 7  # every (joint action, agent, action) cell


def test_never_overwrites_without_being_asked(fitted: tuple, tmp_path: Path) -> None:
    result, train, _ = fitted
    target = tmp_path / "fit.html"
    target.write_text("the user's file")
    with pytest.raises(ConfigurationError, match="already exists; pass overwrite=True"):
        result.report(target, traces=train)
    assert target.read_text() == "the user's file"
    result.report(target, traces=train, overwrite=True)
    assert "<h1>Fit report" in target.read_text()
    with pytest.raises(ConfigurationError, match="needs traces"):
        result.report(tmp_path / "other.html")
    other_game = mechgym.rollout("mechgym/Congestion-v0", LogitQ(), 2, 3, seed=0)
    with pytest.raises(ConfigurationError, match="pass traces of the fitted game"):
        result.report(tmp_path / "other.html", other_game)


# -- the page in a real browser --------------------------------------------------------------------
#: Appended to a copy of the page: after the load event, every image's state as JSON in a <pre>.
_IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify(Array.from(document.images, (i) => [i.complete, i.naturalWidth, i.naturalHeight]));
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    pytest.skip("no headless Chromium on this machine (apt-get install -y chromium; .ci/run installs it)")


def _images_in_browser(page: Path, work: Path) -> list[list[int]]:
    """Load ``page`` in headless Chromium; ``[complete, naturalWidth, naturalHeight]`` of every image."""
    probe = work / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", _IMAGE_CHECK + "</body>"))
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="image-check">(.*?)</pre>', completed.stdout, re.DOTALL)
    assert found is not None, (
        f"Chromium did not run the check (exit {completed.returncode}):\n{completed.stderr[-3000:]}"
    )
    return json.loads(found.group(1))


def test_the_page_renders_in_headless_chromium_with_every_image_loaded(page: Path, tmp_path: Path) -> None:
    images = _images_in_browser(page, tmp_path)
    assert len(images) == page.read_text().count("<img") == 3
    for complete, width, height in images:
        assert complete and width > 0 and height > 0


def test_the_browser_check_sees_a_broken_image(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA"></body></html>')
    assert [width for _, width, _ in _images_in_browser(broken, tmp_path)] == [0]


def test_binned_calibration_pools_consecutive_rounds(fitted: tuple) -> None:
    result, train, _ = fitted
    calib = calibration(result, train)  # 16 episodes x 3 agents = 48 draws per round, 11 rounds
    binned = calib.binned(min_draws=100)  # 3 rounds per bin: 144 draws
    assert (binned.rounds_per_row, binned.n_draws, binned.predicted.shape[0]) == (3, 144, 4)
    np.testing.assert_allclose(binned.observed[1], calib.observed[3:6].mean(0))
    np.testing.assert_allclose(binned.predicted[-1], calib.predicted[9:].mean(0))
    np.testing.assert_allclose(binned.round_centres, [3.0, 6.0, 9.0, 11.5])  # rounds 2-4, 5-7, 8-10, 11-12
    assert calib.binned(min_draws=1).rounds_per_row == 1
