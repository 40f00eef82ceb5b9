"""The order in which the suite's files are handed to pytest-xdist's workers: the longest first.

The test command runs `--dist loadfile`: each worker takes a whole file (its module fixtures and compiled
programs stay in one process) and asks for the next when it is nearly done. Left alone, pytest-xdist sorts the
files by their number of tests, which puts the few-but-long ones (notebooks, main.py processes, multi-process
training) late, where one worker still runs a minute-long file while the others have nothing left. Handing
out the longest first (the LPT rule) lets the short files fill the ends instead: replaying five measured runs
with the scheduler's rule, the last worker finishes 3-30 s sooner with two workers, 25 s with three.

SHARES are each file's percentage of the suite's test time, the mean over three runs with a fresh
compilation cache on a 2-core AMD EPYC (`--junitxml`: call + setup + teardown per file, 2026-12-07). Only the
order matters, so they need updating when a file's cost changes a lot. A file not listed (a new one) counts as
the longest: unknown work goes first rather than last.
"""
import os

SHARES = {
    "test_configs.py": 12.9, "test_notebooks.py": 7.9, "test_faults_storage.py": 7.2, "test_train.py": 6.6,
    "test_vqgan_training.py": 5.9, "test_parallel.py": 5.2, "test_square.py": 4.1, "test_vqgan.py": 4.0,
    "test_library.py": 3.7, "test_vit_at.py": 3.5, "test_corruptions_noise_blur.py": 3.3, "test_apgd.py": 2.3,
    "test_advbn.py": 2.3, "test_pgd_speed_structure.py": 2.2, "test_convert.py": 2.1, "test_vit.py": 2.1,
    "test_fab.py": 2.0, "test_mixacm.py": 1.9, "test_advbn_parity.py": 1.9, "test_dat.py": 1.9,
    "test_corruptions_weather_digital.py": 1.6, "test_faults.py": 1.5, "test_corruptions_cifar.py": 1.4,
    "test_visual_words.py": 1.3, "test_data.py": 1.3, "test_best_checkpoint.py": 1.2, "test_amp.py": 1.1,
    "test_evaluate.py": 1.1, "test_autoattack.py": 1.0, "test_randaugment.py": 1.0, "test_swin.py": 0.9,
    "test_models.py": 0.7, "test_attack_primitives.py": 0.7, "test_corruptions_threefry.py": 0.7,
    "test_methods.py": 0.6, "test_attacks.py": 0.3, "test_bf16_dot_conv.py": 0.1, "test_compile_options.py": 0.1,
    "test_suite_tools.py": 0.0, "test_compare.py": 0.0, "test_optim.py": 0.0,
}


def longest_first(items):
    """`items` (pytest's collected tests) with whole files reordered by SHARES, largest first; the tests of a
    file keep their order, files of equal share their collection order."""
    share = lambda item: SHARES.get(os.path.basename(str(item.path)), float("inf"))
    return sorted(items, key=lambda item: -share(item))
