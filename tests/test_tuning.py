"""The autotuner and its cache: it picks the fastest correct candidate (timed by an injected
timer), honours its budget, and its cache survives concurrent writers and corrupt files; a
tuned configuration computes the same numbers as the defaults."""
import json
import multiprocessing
import warnings

import pytest
import torch

import pigeon
import pigeon.nn
from pigeon.cli import main
from pigeon.examples import rgat, rgcn
from pigeon.ir.lower import lower
from pigeon.ir.plans import TraversalSchedule
from pigeon.runtime.tuner import Tuner
from pigeon.runtime.tuning import CACHE, DEFAULT, Config, TuningCache, code_version, tuning_key
from random_graphs import random_graph


def graph():
    return random_graph(num_nodes=30, num_edges=900, num_etypes=6, seed=3)


def inputs(model, g):
    return tuple(a.double() if isinstance(a, torch.Tensor) else a for a in model.example_inputs(g))


def fake_timer(times_by_label):
    """A timer reporting chosen seconds per configuration (by what the step computes with)."""
    def timer(step):
        return times_by_label[step.label]
    return timer


class LabelledTuner(Tuner):
    """Tags each trial's step with its label so a fake timer can tell them apart."""

    def _step(self, config):
        step = super()._step(config)
        step.label = next((t.label for t in self._trials if t.config == config), "reference")
        return step

    def candidates(self):
        self._trials = super().candidates()
        return self._trials


def test_the_fastest_candidate_wins(tmp_path):
    g = graph()
    cache = TuningCache(tmp_path / "tuning.json")
    probe = LabelledTuner(rgat.rgat, g, inputs(rgat.rgat, g), cache=cache)
    labels = [t.label for t in probe.candidates()]
    assert labels[0] == "defaults" and "without compact" in labels and len(labels) >= 4
    times = {label: 1.0 for label in labels}
    times["without compact"] = 0.25
    # no time budget: compiling every candidate may take longer than one on a slow machine
    tuner = LabelledTuner(rgat.rgat, g, inputs(rgat.rgat, g), timer=fake_timer(times), cache=cache, budget=None)
    result = tuner.run()
    assert result.best.label == "without compact" and result.speedup == pytest.approx(4.0)
    assert cache.lookup(tuner.key) == Config(disabled=frozenset({"compact"}))


def test_wrong_or_failing_candidates_are_dropped_and_reported(tmp_path, monkeypatch):
    g = graph()
    cache = TuningCache(tmp_path / "tuning.json")
    tuner = LabelledTuner(rgat.rgat, g, inputs(rgat.rgat, g), cache=cache, budget=None)
    labels = [t.label for t in tuner.candidates()]
    wrong, broken = labels[1], labels[2]
    real_step = LabelledTuner._step

    def step(self, config):
        inner = real_step(self, config)
        if inner.label == wrong:
            def off():
                return [x + 1.0 for x in inner()]
            off.label = wrong
            return off
        if inner.label == broken:
            raise RuntimeError("this candidate breaks")
        return inner

    monkeypatch.setattr(LabelledTuner, "_step", step)
    times = {label: 1.0 for label in labels}
    times[wrong] = times[broken] = 0.001  # the fastest, were they right
    tuner.timer = fake_timer(times)
    result = tuner.run()
    status = {t.label: t.status for t in result.trials}
    assert status[wrong].startswith("wrong output") and status[broken].startswith("failed: RuntimeError")
    assert result.best.label not in (wrong, broken)
    stored = cache.entries()[tuner.key]
    assert any(d.startswith(wrong) for d in stored["dropped"])


def test_budget_counted_in_trials(tmp_path):
    g = graph()
    tuner = Tuner(rgat.rgat, g, inputs(rgat.rgat, g), timer=lambda step: 1.0, max_trials=2,
                  cache=TuningCache(tmp_path / "t.json"), budget=None)
    result = tuner.run()
    assert sum(t.seconds is not None for t in result.trials) == 2
    assert all(t.status == "not run (budget)" for t in result.trials[2:])


def test_config_round_trips_through_json():
    config = Config(frozenset({"compact"}), frozenset({"msg"}), "atomic", False,
                    (("rgat_backward", "k0_dst_parallel_x", (("threads_per_row", 4),)),))
    assert Config.from_json(json.loads(json.dumps(config.to_json()))) == config
    assert "atomic" in config.describe() and "threads_per_row=4" in config.describe()
    assert DEFAULT.describe() == "defaults"


def _store_many(args):
    path, worker = args
    cache = TuningCache(path)
    for i in range(20):
        cache.store(f"key-{worker}-{i}", {"config": DEFAULT.to_json(), "n": i})
    return True


def test_two_processes_storing_at_once(tmp_path):
    path = tmp_path / "tuning.json"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert all(pool.map(_store_many, [(path, 0), (path, 1)]))
    entries = json.loads(path.read_text())["entries"]
    assert len(entries) == 40
    assert TuningCache(path).lookup("key-1-19") == DEFAULT


def test_a_truncated_cache_is_set_aside_and_rebuilt(tmp_path):
    path = tmp_path / "tuning.json"
    cache = TuningCache(path)
    cache.store("a", {"config": DEFAULT.to_json()})
    path.write_text(path.read_text()[:15])
    fresh = TuningCache(path)
    with pytest.warns(UserWarning, match="unreadable"):
        assert fresh.lookup("a") is None
    assert list(tmp_path.glob("tuning.corrupt-*.json"))
    fresh.store("b", {"config": DEFAULT.to_json()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TuningCache(path).lookup("b") == DEFAULT


def test_a_tuned_configuration_gives_the_same_numbers():
    g = graph()
    args = inputs(rgat.rgat, g)
    def timer(step):  # prefer keeping every value per edge over everything else
        return 0.1 if step.config == Config(disabled=frozenset({"compact"})) else 1.0

    class Tagged(Tuner):
        def _step(self, config):
            step = super()._step(config)
            step.config = config
            return step

    default = rgat.rgat(g, *args)
    # no time budget: on a loaded machine compiling the candidates may outlast any fixed one
    result = Tagged(rgat.rgat, g, args, mode="infer", timer=timer, budget=None).run()
    assert result.best.config == Config(disabled=frozenset({"compact"}))
    with torch.no_grad():
        tuned = rgat.rgat(g, *args)
    assert rgat.rgat.last_executable.tuned and rgat.rgat.last_executable.config == result.best.config
    torch.testing.assert_close(tuned, default, rtol=1e-12, atol=1e-12)
    backend = rgat.rgat.last_executable.backend
    assert CACHE.lookup(tuning_key(rgat.rgat.program(g, *args), g, "float64", "infer", backend)) == result.best.config


def test_the_tuning_key_tells_apart_what_changes_the_best_choice():
    g = graph()
    program = rgat.rgat.program(g, *inputs(rgat.rgat, g))
    keys = {tuning_key(program, g, "float64", "infer", "cpp"), tuning_key(program, g, "float64", "infer", "reference"),
            tuning_key(program, g, "float64", "train", "cpp", ("weight",)),
            tuning_key(program, g, "float64", "train", "cpp", ("h", "weight"))}
    assert len(keys) == 4
    assert all(k.endswith("|" + code_version()) for k in keys) and len(code_version()) == 12


def test_tune_a_layer():
    g = graph()
    layer = pigeon.nn.RGCNConv(8, 8, g.num_etypes).double()
    h = torch.randn(g.num_nodes, 8, dtype=torch.float64)
    result = pigeon.tune(layer, g, h, max_trials=3, timer=lambda step: 1.0, budget=None)
    assert result.default.status == "ok" and result.best.seconds == 1.0
    layer(g, h).sum().backward()
    assert layer.last_executable.tuned


def test_schedules_in_a_config_reach_the_plans():
    g = graph()
    exe = rgcn.rgcn.executable(g, *inputs(rgcn.rgcn, g))
    plans = lower(exe.forward)
    kernel = next(k for k in plans.kernels if isinstance(k.schedule, TraversalSchedule))
    config = Config(schedules=((plans.name, kernel.name, (("threads_per_row", 4),)),))
    overrides = config.schedules_for(plans.name, {k.name: k.schedule for k in plans.kernels})
    tuned = lower(exe.forward, schedules=overrides)
    assert next(k for k in tuned.kernels if k.name == kernel.name).schedule.threads_per_row == 4


def test_tune_command(capsys):
    assert main(["tune", "rgcn", "--dataset", "aifb", "--scale", "0.05", "--budget", "5", "--feats", "16"]) == 0
    out = capsys.readouterr().out
    assert "defaults" in out and "stored in" in out
    assert main(["tune", "--show"]) == 0
    assert "rgcn on Graph(" in capsys.readouterr().out
    assert main(["tune", "--clear"]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["tune", "--show"]) == 0
    assert "0 tuning entries" in capsys.readouterr().out


def test_a_win_that_does_not_hold_when_timed_again_keeps_the_defaults(tmp_path):
    g = graph()
    seen = []

    def noisy(step):  # the defaults' first timing is slowed down by something else on the machine
        seen.append(step.label)
        if step.label == "defaults":
            return 2.0 if seen.count("defaults") == 1 else 1.0
        return 0.99 if step.label == "without compact" else 1.5

    tuner = LabelledTuner(rgat.rgat, g, inputs(rgat.rgat, g), timer=noisy, cache=TuningCache(tmp_path / "t.json"),
                           budget=None)
    result = tuner.run()
    assert result.best.label == "defaults" and seen.count("defaults") == 2
    assert "timed again" in {t.label: t.status for t in result.trials}["without compact"]
    assert tuner.cache.lookup(tuner.key) == DEFAULT
    assert result.default.seconds == 1.0


def test_a_gain_below_the_threshold_keeps_the_defaults(tmp_path):
    g = graph()
    probe = LabelledTuner(rgat.rgat, g, inputs(rgat.rgat, g), cache=TuningCache(tmp_path / "t.json"))
    times = {t.label: 1.0 for t in probe.candidates()}
    times["without compact"] = 0.99
    tuner = LabelledTuner(rgat.rgat, g, inputs(rgat.rgat, g), timer=fake_timer(times),
                          cache=TuningCache(tmp_path / "t.json"), budget=None)
    assert tuner.run().best.label == "defaults"


def test_a_schedule_for_a_kernel_the_program_lacks_is_an_error():
    g = graph()
    exe = rgcn.rgcn.executable(g, *inputs(rgcn.rgcn, g))
    plans = lower(exe.forward)
    defaults = {k.name: k.schedule for k in plans.kernels}
    stale = Config(schedules=((plans.name, "k9_no_such_kernel", (("threads_per_row", 4),)),))
    with pytest.raises(ValueError, match="k9_no_such_kernel.*no such kernel"):
        stale.schedules_for(plans.name, defaults)
    kernel = next(iter(defaults))
    with pytest.raises(ValueError, match="no such knob"):
        Config(schedules=((plans.name, kernel, (("warp_shuffles", 2),)),)).schedules_for(plans.name, defaults)
    assert stale.schedules_for("another_program", defaults) == {}  # schedules of other programs are theirs


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_no_two_candidates_run_the_same_code(mode):
    g = graph()
    tuner = Tuner(rgcn.rgcn, g, inputs(rgcn.rgcn, g), mode=mode, cache=TuningCache())
    trials = tuner.candidates()
    codes = [tuner.code(t.config) for t in trials]
    assert len(set(codes)) == len(codes) == len(trials)
    # a rewrite that changes nothing in RGCN, and knob values its kernels ignore, were merged
    assert tuner.merged and all(same in {t.label for t in trials} for _, same in tuner.merged)


def test_tune_never_times_two_candidates_that_run_the_same_code(tmp_path):
    g = graph()
    timed = {}

    class Recording(Tuner):  # steps that compile nothing: what is timed matters here, not the numbers
        def _step(self, config):
            def step():
                return [torch.ones(3, dtype=torch.float64)]
            step.config = config
            return step

    def timer(step):
        timed.setdefault(tuner.code(step.config), set()).add(step.config)
        return 1.0

    tuner = Recording(rgat.rgat, g, inputs(rgat.rgat, g), mode="train", timer=timer, budget=None,
                      cache=TuningCache(tmp_path / "t.json"))
    result = tuner.run()
    assert sum(t.seconds is not None for t in result.trials) == len(timed) > 1
    assert all(len(configs) == 1 for configs in timed.values())


def test_training_candidates_come_from_the_gradient_the_runtime_builds():
    """h gets no gradient in training: the runtime's backward program lacks the kernels of dh,
    and every schedule candidate names a kernel of the programs the runtime runs."""
    g = graph()
    args = inputs(rgat.rgat, g)
    tuner = Tuner(rgat.rgat, g, args, mode="train", cache=TuningCache())
    exe = rgat.rgat.executable(g, *args, config=DEFAULT)
    wrt = tuner._wrt(exe)
    assert set(wrt) == {n.name for n in exe.forward.inputs} - {"h"}
    runs = {p.name: {k.name for k in lower(p, target="cpp").kernels}
            for p in (exe.gradient(wrt).forward, exe.gradient(wrt).backward)}
    every = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    assert {k.name for k in lower(every.backward, target="cpp").kernels} != runs[every.backward.name]
    scheduled = [(p, k) for t in tuner.candidates() for p, k, _ in t.config.schedules]
    if tuner.backend in ("cpp", "cuda"):
        assert scheduled and all(k in runs[p] for p, k in scheduled)


def test_knobs_a_kernel_ignores_make_no_candidates():
    """CUDA: the GEMM has no vector loads and per-destination kernels take one destination per
    thread group, so those knob values render the same code and are no variants."""
    from pigeon.codegen import schedule_variants
    from pigeon.ir.plans import GemmSchedule, Strategy

    g = graph()
    exe = rgat.rgat.executable(g, *inputs(rgat.rgat, g))
    grad = exe.gradient(("weight", "attn_src", "attn_dst"))
    for program in (grad.forward, grad.backward):
        for kernel in lower(program, target="cuda").kernels:
            for variant in schedule_variants(kernel):
                changed = {k for k, v in variant.schedule.knobs().items() if getattr(kernel.schedule, k) != v}
                if isinstance(kernel.schedule, GemmSchedule):
                    assert "vector_width" not in changed, kernel.name
                if kernel.strategy == Strategy.DST_PARALLEL:
                    assert "edges_per_thread" not in changed, kernel.name


def test_the_code_version_hashes_the_compilers_own_source(tmp_path):
    from pigeon.runtime.tuning import compiler_folders, source_digest

    names = {folder.name for folder in compiler_folders()}
    assert {"ir", "codegen", "templates", "runtime"} <= names  # passes and lowering live in ir/
    (tmp_path / "passes").mkdir()
    (tmp_path / "passes" / "a_pass.py").write_text("x = 1\n")
    (tmp_path / "kernel.cpp.j2").write_text("{{ body }}\n")
    before = source_digest([tmp_path])
    (tmp_path / "kernel.cpp.j2").write_text("{{ body }};\n")
    assert source_digest([tmp_path]) != before
    (tmp_path / "notes.txt").write_text("not source")
    assert source_digest([tmp_path]) == source_digest([tmp_path])
