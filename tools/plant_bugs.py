"""Plant known bugs one at a time in a scratch copy of the package; the named test must go red.

    python tools/plant_bugs.py            # every bug below (about 2 minutes on 2 cores)
    python tools/plant_bugs.py top-s-ties noise-divisor

The copy lives in a temporary folder put first on PYTHONPATH, so the working tree is never
touched. Each row prints CAUGHT (the named test failed, as it must) or SURVIVED (a hole in the
suite). The first five are the bugs of issue 13; the others are of the same kinds.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    """A text replacement in one module and the test that must catch it."""

    name: str
    module: str
    old: str
    new: str
    test: str


BUGS = [
    Bug("top-s-ties", "layers/draws.py",
        "kept.masked_fill_(kept < kth, 0.0)",
        "kept = torch.zeros_like(kept).scatter(-1, kept.topk(top_s).indices, "
        "kept.topk(top_s).values)",
        "tests/test_sampling_oracles.py::test_top_s_draws_the_kept_components_in_proportion_to_their_scores"),
    Bug("noise-divisor", "layers/gmm.py", "noise = noise / (sqrt_prec * noise_divisor)",
        "noise = noise / sqrt_prec * noise_divisor",
        "tests/test_sampling_oracles.py::test_noise_has_standard_deviation_one_over_sqrt_precision_times_divisor"),
    Bug("loglik-is-annealed", "evaluation/outliers.py",
        "value = (scores.loglik, scores.max_component, scores.annealed)[column]",
        "value = (scores.annealed, scores.max_component, scores.annealed)[column]",
        "tests/test_scores_oracles.py::test_position_scores_of_every_kind_and_layer_match_the_brute_force"),
    Bug("class-ignored", "generation/sampling.py", "control = class_control(model, classes, n)",
        "control = param.new_ones(n, h, w, k)",
        "tests/test_sampling_oracles.py::test_class_conditional_samples_show_the_requested_classes"),
    Bug("loaded-radius-stale", "layers/gmm.py",
        "module._sigma_host = float(module.sigma_som)", "pass",
        "tests/test_persistence.py::test_a_dcgmm_run_loads_as_the_model_that_was_saved_and_continues_bit_for_bit"),
    # Of the same kinds: knobs, directions, masks, kinds, persistence, bounds, training.
    Bug("noise-at-bound-ignored", "layers/gmm.py",
        "at_bound = sqrt_prec >= SQRT_PRECISION_UPPER_BOUND * (1 - 1e-6)",
        "at_bound = sqrt_prec >= SQRT_PRECISION_UPPER_BOUND * 2",
        "tests/test_sampling_oracles.py::test_noise_has_standard_deviation_one_over_sqrt_precision_times_divisor"),
    Bug("start-weights-ignored", "generation/sampling.py", 'elif config.start == "weights":',
        'elif config.start == "never":',
        "tests/test_sampling_oracles.py::test_the_top_layer_starts_uniform_or_from_its_mixing_weights"),
    Bug("inversion-sign", "layers/classifier.py",
        "signal = (t.clamp_min(tiny).log() - self.bias) @ top_rows.T",
        "signal = (t.clamp_min(tiny).log() + self.bias) @ top_rows.T",
        "tests/test_sampling_oracles.py::test_classifier_inversion_points_at_the_requested_class"),
    Bug("per-layer-knob-off-by-one", "generation/sampling.py", "return setting.get(index + 1)",
        "return setting.get(index)",
        "tests/test_sampling_oracles.py::test_per_layer_knobs_reach_the_layer_they_name"),
    Bug("center-mask-transposed", "generation/inpainting.py",
        "mask[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = True",
        "mask[w // 4 : w // 4 + w // 2, h // 4 : h // 4 + h // 2] = True",
        "tests/test_inpainting_oracles.py::test_named_masks_are_the_drawn_pixels_on_a_non_square_image"),
    Bug("missing-not-marginalised", "layers/gmm.py", "observed = (~missing).to(x.dtype)",
        "observed = torch.ones_like(x)",
        "tests/test_inpainting_oracles.py::test_a_flat_gmm_completes_with_the_exact_conditional_expectation"),
    Bug("nsn-fills-the-wrong-entries", "baselines/nsn.py",
        "f1 = torch.where(touched, rebuilt_f1, maps[0])",
        "f1 = torch.where(touched, maps[0], rebuilt_f1)",
        "tests/test_inpainting_oracles.py::test_nsn_occlusion_filling_matches_a_naive_loop"),
    Bug("annealed-is-max", "layers/gmm_head.py",
        "return resp, (log_joint @ kernel.T).amax(dim=-1), top, loglik",
        "return resp, top, top, loglik",
        "tests/test_scores_oracles.py::test_position_scores_of_every_kind_and_layer_match_the_brute_force"),
    Bug("logits-not-loaded", "training/checkpoint.py",
        "    model.load_state_dict(tensors)\n    return model.to(device)",
        '    model.load_state_dict({k: v for k, v in tensors.items() if "logits" not in k}, '
        "strict=False)\n    return model.to(device)",
        "tests/test_persistence.py::test_a_dcgmm_run_loads_as_the_model_that_was_saved_and_continues_bit_for_bit"),
    Bug("resume-forgets-partial-sums", "training/state.py",
        'self._window_sum = torch.tensor(state["window_sum"], dtype=f64, device=dev)',
        'self._window_sum = torch.zeros(len(state["window_sum"]), dtype=f64, device=dev)',
        "tests/test_persistence.py::test_a_dcgmm_run_loads_as_the_model_that_was_saved_and_continues_bit_for_bit"),
    Bug("no-precision-clip", "training/trainer.py",
        "        for _, gmm in self.model.gmm_layers():\n            gmm.project_()",
        "        pass",
        "tests/test_training.py::test_training_keeps_every_precision_inside_its_bounds"),
    Bug("elbo-double-kl", "baselines/vae.py",
        "return (pi_bar * per_component).sum(-1) - self.stick_kl(q)",
        "return (pi_bar * per_component).sum(-1) - 2 * self.stick_kl(q)",
        "tests/test_vae.py::test_elbo_is_its_quadrature_value_below_the_likelihood_by_the_posterior_gap"),
    Bug("annealing-abs-progress", "training/annealing.py",
        "-2 * cfg.delta < change / progress < cfg.delta",
        "-2 * cfg.delta < change / abs(progress) < cfg.delta",
        "tests/test_annealing.py::test_single_exp_on_an_objective_that_falls_from_the_start"),
    Bug("sharpen-rate-not-halved", "generation/sharpening.py",
        "rate = torch.where(better, rate, rate / 2)", "rate = torch.where(better, rate, rate / 3)",
        "tests/test_sampling_oracles.py::test_sharpening_steps_by_hand_on_a_quadratic"),
    Bug("gloo-group-outlives-shutdown", "training/distributed.py",
        "        _bind_default_arguments_before_the_group_exists()\n", "",
        "tests/test_distributed.py::test_no_gloo_thread_outlives_shutdown"),
    Bug("folded-rows-not-averaged", "layers/folding.py",
        "            summed.mul_(self._inverse_coverage.to(summed.dtype)[:, :, None])",
        "            pass",
        "tests/test_sampling_fused.py::test_average_rows_and_mixtures_are_the_sample_of_the_windows_they_read"),
    Bug("window-missing-if-any", "stages/gmm.py",
        "else missing.all(-1)", "else missing.any(-1)",
        "tests/test_inpainting_oracles.py::test_a_stage_passes_on_the_missing_mask_its_layers_would"),
    Bug("mixture-border-dropped", "layers/folding.py",
        "stride=(sy, sx), output_padding=uncovered", "stride=(sy, sx)",
        "tests/test_sampling_fused.py::test_average_rows_and_mixtures_are_the_sample_of_the_windows_they_read"),
    Bug("winner-rows-misaligned", "layers/gmm_gradients.py",
        "WinnerRows(best, scaled)", "WinnerRows(best.flip(-1), scaled)",
        "tests/test_gmm_gradients.py::test_folded_stage_input_gradient_matches_autograd"),
    Bug("winner-gather-wrong-position", "layers/gmm_gradients.py",
        "view(height, width) * k", "view(width, height).T * k",
        "tests/test_gmm_gradients.py::test_gmm_input_gradient_matches_autograd"),
    Bug("nsn-lower-bounds-ignore-moves", "baselines/nsn_bounds.py",
        "self.lower[:, :n_kept].sub_(delta.float()).clamp_min_(0.0)",
        "self.lower[:, :n_kept].clamp_min_(0.0)",
        "tests/test_nsn_estep.py::test_every_sweep_of_a_pruned_fit_agrees_with_brute_force[per-filter]"),
    Bug("nsn-distance-bound-ignores-moves", "baselines/nsn_estep.py",
        "self.dist = self.dist + torch.cat([delta, delta.new_zeros(1)])[self.best]",
        "self.dist = self.dist + 0 * torch.cat([delta, delta.new_zeros(1)])[self.best]",
        "tests/test_nsn_estep.py::test_every_sweep_of_a_pruned_fit_agrees_with_brute_force[per-patch]"),
    Bug("nsn-sums-keep-moved-patches", "baselines/nsn_estep.py",
        "((before[moved], -1.0), (assigned[moved], 1.0))",
        "((before[moved], 0.0), (assigned[moved], 1.0))",
        "tests/test_nsn_estep.py::test_every_sweep_of_a_pruned_fit_agrees_with_brute_force[per-patch]"),
    Bug("nsn-patch-bound-ignores-moves", "baselines/nsn_bounds.py",
        "self.scorer.score((r - delta).clamp_min(0.0).square(), sigmas[None, :])",
        "self.scorer.score(r.clamp_min(0.0).square(), sigmas[None, :])",
        "tests/test_nsn_estep.py::test_every_sweep_of_a_pruned_fit_agrees_with_brute_force[per-patch]"),
    Bug("contrast-wrong-spread", "evaluation/contrast.py",
        "(upper - self.mean[0]) / self.std[0]", "(upper - self.mean[0]) / self.std[1]",
        "tests/test_layer_contrast.py::test_the_contrast_is_the_upper_z_score_minus_the_lower_one"),
    Bug("independent-chunk-mean", "stages/independent.py",
        "chunk_resp, rows=n * ho * wo", "chunk_resp",
        "tests/test_gmm_gradients.py::test_independent_stage_equals_folding_then_gmm"),
    Bug("batch-last-components-dim", "stages/independent.py",
        "                    components_dim=-2,", "                    components_dim=-1,",
        "tests/test_gmm_gradients.py::test_independent_stages_train_through_the_batch_last_hand_over"),
    Bug("sum-of-logs-halves", "stages/position_parameters.py",
        "values[..., : dim // 2] * values[..., dim // 2 :]",
        "values[..., : dim // 2] * values[..., : dim // 2]",
        "tests/test_position_parameters.py::test_sum_of_logs_is_the_sum_of_the_logs"),
    Bug("compiled-filters-sign", "stages/position_parameters.py",
        "torch.cat([-0.5 * precisions, linear], dim=-1)",
        "torch.cat([0.5 * precisions, linear], dim=-1)",
        "tests/test_position_parameters.py::test_compiled_passes_match_the_op_by_op_ones"),
    Bug("window-sums-strides", "stages/window_sums.py",
        "features.unfold(1, fy, sy).unfold(2, fx, sx)",
        "features.unfold(1, fy, sx).unfold(2, fx, sy)",
        "tests/test_window_sums.py::test_window_sums_give_the_autograd_gradients"),
    Bug("window-sums-one-hot-scale", "stages/window_sums.py",
        "return sums * table", "return sums",
        "tests/test_window_sums.py::test_window_sums_give_the_autograd_gradients"),
    Bug("batch-last-argmax-off-by-one", "layers/batch_last.py",
        "torch.where(larger > best_values, k, best)",
        "torch.where(larger > best_values, k - 1, best)",
        "tests/test_batch_last.py::test_compiled_max_and_softmax_equal_torchs"),
    Bug("batch-last-softmax-axis", "layers/batch_last.py",
        "exps / exps.sum(-2, keepdim=True)", "exps / exps.sum(-1, keepdim=True)",
        "tests/test_batch_last.py::test_independent_stage_trains_alike_with_the_compiled_reductions"),
    Bug("observed-filters-log-2pi", "stages/position_parameters.py",
        "per_entry = sqrt_precisions.log() - 0.5 * means * means * precisions - 0.5 * LOG_2PI",
        "per_entry = sqrt_precisions.log() - 0.5 * means * means * precisions - LOG_2PI",
        "tests/test_position_parameters.py::test_observed_filters_are_the_marginal_log_density_coefficients"),
    Bug("gmm-head-infinite-shift", "layers/gmm_head.py",
        "shift = torch.where(top.isinf(), torch.zeros_like(top), top)", "shift = top",
        "tests/test_gmm_head.py::test_infinite_and_nan_rows_score_as_pytorch_does"),
]  # fmt: skip


def run_in_copy(bug: Bug | None, tests: list[str]) -> tuple[int, str]:
    """Run ``tests`` against a scratch copy of the package with ``bug`` planted (or none).

    Returns pytest's exit code and its last line.
    """
    with tempfile.TemporaryDirectory(prefix="dcgmm-bug-") as scratch:
        package = Path(scratch) / "dcgmm"
        shutil.copytree(ROOT / "src" / "dcgmm", package)
        if bug is not None:
            path = package / bug.module
            source = path.read_text()
            if source.count(bug.old) != 1:
                raise SystemExit(f"{bug.name}: the text to replace is not in {bug.module} once")
            path.write_text(source.replace(bug.old, bug.new))
        env = {**os.environ, "PYTHONPATH": scratch, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        return done.returncode, lines[-1] if lines else done.stderr.strip()[-200:]


def main(argv: list[str]) -> int:
    """Plant the named bugs (default all); exit 1 if any survived."""
    names = [b.name for b in BUGS]
    if any(arg.startswith("-") for arg in argv) or set(argv) - set(names):
        unknown = sorted(set(argv) - set(names))
        print(f"usage: python tools/plant_bugs.py [BUG ...]; unknown {unknown}; bugs: {names}")
        return 2
    chosen = [b for b in BUGS if not argv or b.name in argv]
    # The control: without a bug, the same tests pass on the same kind of copy.
    code, summary = run_in_copy(None, sorted({b.test for b in chosen}))
    print(f"{'control ' if code == 0 else 'BROKEN  '} {'(no bug planted)':<30} {summary}")
    if code != 0:
        return 2
    survived = 0
    for bug in chosen:
        code, summary = run_in_copy(bug, [bug.test])
        caught = code == 1  # tests failed; a collection error (2) or a crash does not count
        survived += not caught
        print(f"{'CAUGHT  ' if caught else 'SURVIVED'} {bug.name:<30} {summary}", flush=True)
    print(f"{len(chosen) - survived} of {len(chosen)} planted bugs caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
