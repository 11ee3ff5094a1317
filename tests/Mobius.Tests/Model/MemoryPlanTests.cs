using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>The memory plan (training steps on a dry-run meta backend) against the same steps on the CPU.</summary>
public sealed class MemoryPlanTests
{
    public static TheoryData<bool, bool> Recompute => new() { { false, false }, { true, false }, { false, true }, { true, true } };

    [Theory]
    [MemberData(nameof(Recompute))]
    public void The_plan_is_what_the_cpu_measures(bool spatial, bool temporal) =>
        PlanIsMeasured(new TrainOptions { Seed = 3, LearningRate = 1e-3f, RecomputeSpatial = spatial, RecomputeTemporal = temporal });

    /// <summary>Activations kept in bf16 or int8 blocks: the narrow copies, their padding and scales, planned to the byte.</summary>
    [Theory]
    [InlineData(DType.BFloat16)]
    [InlineData(DType.Int8Blocks)]
    public void The_plan_is_what_the_cpu_measures_with_narrower_saved_activations(DType kept) =>
        PlanIsMeasured(new TrainOptions { Seed = 4, LearningRate = 1e-3f, SavedActivations = kept });

    /// <summary>AdamW's moments in bf16: half the optimiser state, planned to the byte.</summary>
    [Fact]
    public void The_plan_is_what_the_cpu_measures_with_bf16_optimizer_state() =>
        PlanIsMeasured(new TrainOptions { Seed = 6, LearningRate = 1e-3f, OptimizerState = DType.BFloat16 });

    private static void PlanIsMeasured(TrainOptions options)
    {
        var config = ModelConfig.Get("micro");
        var plan = MemoryPlan.Plan(config, options);

        foreach (var (topology, planned) in new[] { (Topology.Serial, plan.Serial), (Topology.Parallel, plan.Parallel) })
        {
            using var cpu = new CpuBackend(1);
            using var model = TextToVideo.Create(cpu, config, topology, options.Seed);
            using var trainer = new Trainer(model, Comparison.Data(config, options.Seed, Split.Train), Stage.TextToVideo, options);
            var steps = new[] { trainer.TrainStep(), trainer.TrainStep() };
            Assert.Equal(steps.Max(s => s.Memory.PeakBytes), planned.PeakBytes);
            Assert.Equal(steps.Max(s => s.Memory.PeakBlockBytes), planned.PeakBlockBytes); // the same allocator, the same blocks
            Assert.Equal(steps.Max(s => s.SavedActivationBytes), planned.SavedActivationBytes);
            Assert.Equal(trainer.TrainableParameters, planned.TrainableParams);
            var atPeak = steps.MaxBy(s => s.Memory.PeakBytes)!.Memory.AtPeak;
            Assert.Equal(atPeak.Values.Sum(), planned.AtPeak.Values.Sum());
            Assert.Equal(atPeak[MemoryCategory.SavedActivations], planned.AtPeak["saved_activations"]);
            Assert.Equal(atPeak[MemoryCategory.OptimizerState], planned.AtPeak["optimizer_state"]);
            Assert.Equal(steps.MaxBy(s => s.Memory.PeakBytes)!.SavedByOp, planned.SavedByOp); // op for op
            Assert.True(Math.Abs(steps[^1].Loss) > 0, "the cpu run computed something");
        }

        Assert.True(plan.Parallel.PeakBytes < plan.Serial.PeakBytes);
        Assert.InRange(plan.PeakRatio, 0.01, 0.999);
    }

    /// <summary>
    /// What the saved-bytes ratio is made of: the parallel topology keeps, op for op and byte for byte, what serial
    /// keeps for its temporal layers (and the loss and out head both have), and serial keeps on top only what its
    /// frozen spatial layers need to pass input gradients. At every recompute policy; the by-op rows add up to the
    /// by-kind ones.
    /// </summary>
    [Theory]
    [MemberData(nameof(Recompute))]
    public void The_parallel_topology_keeps_op_for_op_what_serial_keeps_outside_its_spatial_layers(bool spatial, bool temporal)
    {
        var config = ModelConfig.Get("micro");
        var plan = MemoryPlan.Plan(config, new TrainOptions { Seed = 5, LearningRate = 1e-3f, RecomputeSpatial = spatial, RecomputeTemporal = temporal });
        string[] spatialKinds = ["ResBlock2D", "SpatialTransformer"];

        foreach (var p in new[] { plan.Serial, plan.Parallel })
        {
            Assert.NotEmpty(p.SavedByOp);
            Assert.All(p.SavedByOp, o => Assert.True(o.SavedBytes > 0 && o.Nodes > 0, $"{o.Kind}/{o.Op}"));
            Assert.All(p.SavedByOp.Zip(p.SavedByOp.Skip(1)), pair => Assert.True(pair.First.SavedBytes >= pair.Second.SavedBytes, "largest first"));
            var byKind = p.SavedByOp.GroupBy(o => o.Kind).ToDictionary(g => g.Key, g => g.Sum(o => o.SavedBytes));
            Assert.Equal(p.SavedByKind.Where(kv => kv.Value != 0).OrderBy(kv => kv.Key), byKind.OrderBy(kv => kv.Key));
        }

        var serial = plan.Serial.SavedByOp.ToDictionary(o => (o.Kind, o.Op));
        foreach (var o in plan.Parallel.SavedByOp)
        {
            Assert.DoesNotContain(o.Kind, spatialKinds);
            Assert.True(serial.Remove((o.Kind, o.Op), out var same), $"serial keeps nothing for {o.Kind}/{o.Op}");
            Assert.Equal(o, same);
        }

        Assert.NotEmpty(serial);
        Assert.All(serial.Keys, k => Assert.Contains(k.Kind, spatialKinds));
        Assert.Equal(plan.Serial.SavedByOp.Sum(o => o.SavedBytes) - plan.Parallel.SavedByOp.Sum(o => o.SavedBytes), serial.Values.Sum(o => o.SavedBytes));
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void The_largest_batch_is_the_last_one_a_scan_of_every_batch_finds_within_the_budget(int seed)
    {
        var config = ModelConfig.Get("micro");
        var rng = new Random(seed);
        var options = new TrainOptions { Seed = 5, LearningRate = 1e-3f, RecomputeTemporal = rng.Next(2) == 1 };

        // Every batch from 1 to 10, planned one by one: the peaks grow with the batch. The search counts the peak in the
        // allocator's blocks, each tensor rounded up to its size class: no less than the tensors, at most an eighth more.
        // (The requested bytes fit where the blocks did not: an ms256 batch a plan of requested bytes fitted ran out of memory.)
        var peaks = Enumerable.Range(1, 10).Select(b => MemoryPlan.Plan(config, options with { Batch = b })).ToList();
        Assert.All(peaks.Zip(peaks.Skip(1)), pair =>
        {
            Assert.True(pair.Second.Serial.PeakBytes > pair.First.Serial.PeakBytes);
            Assert.True(pair.Second.Parallel.PeakBytes > pair.First.Parallel.PeakBytes);
            Assert.True(pair.Second.Serial.PeakBlockBytes > pair.First.Serial.PeakBlockBytes);
            Assert.True(pair.Second.Parallel.PeakBlockBytes > pair.First.Parallel.PeakBlockBytes);
        });
        Assert.All(peaks.SelectMany(p => new[] { p.Serial, p.Parallel }), t => Assert.InRange(t.PeakBlockBytes, t.PeakBytes + 1, (long)(t.PeakBytes * 1.125) + (1 << 20)));

        // A budget somewhere between serial's batch-1 and batch-10 peaks, not on a plan's peak.
        long budget = peaks[0].Serial.PeakBlockBytes + (long)(rng.NextDouble() * (peaks[9].Serial.PeakBlockBytes - peaks[0].Serial.PeakBlockBytes));
        int Scan(Func<MemoryPlanResult, long> peak) => peaks.Count(p => peak(p) <= budget);
        var (serial, parallel) = MemoryPlan.LargestBatch(config, options, budget, maxBatch: 10);
        Assert.Equal(Scan(p => p.Serial.PeakBlockBytes), serial);
        Assert.Equal(Scan(p => p.Parallel.PeakBlockBytes), parallel);
        Assert.InRange(serial, 1, 10);
        Assert.True(parallel >= serial, $"seed {seed}: the parallel topology fits no fewer clips ({parallel} against {serial})");

        Assert.Equal((0, 0), MemoryPlan.LargestBatch(config, options, peaks[0].Parallel.PeakBlockBytes - 1));
        Assert.Equal((10, 10), MemoryPlan.LargestBatch(config, options, peaks[9].Serial.PeakBlockBytes, maxBatch: 10));
    }

    [Fact]
    public void The_operating_points_are_the_plans_of_every_recompute_policy()
    {
        var config = ModelConfig.Get("micro");
        var options = new TrainOptions { Seed = 4, LearningRate = 1e-3f };
        var points = MemoryPlan.OperatingPoints(config, options);

        Assert.Equal(MemoryPlan.Policies.Count, points.Count);
        foreach (var ((spatial, temporal), point) in MemoryPlan.Policies.Zip(points))
        {
            var plan = MemoryPlan.Plan(config, options with { RecomputeSpatial = spatial, RecomputeTemporal = temporal });
            Assert.Equal(MemoryPlan.PolicyName(spatial, temporal), point.Recompute);
            Assert.Equal((plan.Serial.PeakBytes, plan.Serial.SavedActivationBytes), (point.Serial.PeakBytes, point.Serial.SavedActivationBytes));
            Assert.Equal((plan.Parallel.PeakBytes, plan.Parallel.SavedActivationBytes), (point.Parallel.PeakBytes, point.Parallel.SavedActivationBytes));
            Assert.Equal((double)plan.Parallel.PeakBytes / plan.Serial.PeakBytes, point.Ratio.PeakBytes, 12);
        }

        var (none, temporalOnly, spatialOnly, both) = (points[0], points[1], points[2], points[3]);
        // Serial keeps spatial and temporal activations: each recomputation lowers what it saves, both the most.
        Assert.True(temporalOnly.Serial.SavedActivationBytes < none.Serial.SavedActivationBytes);
        Assert.True(spatialOnly.Serial.SavedActivationBytes < none.Serial.SavedActivationBytes);
        Assert.True(both.Serial.SavedActivationBytes < Math.Min(temporalOnly.Serial.SavedActivationBytes, spatialOnly.Serial.SavedActivationBytes));
        // The parallel topology keeps no spatial activation: recomputing spatial layers changes nothing for it.
        Assert.Equal(none.Parallel, spatialOnly.Parallel);
        Assert.Equal(temporalOnly.Parallel, both.Parallel);
        Assert.True(temporalOnly.Parallel.SavedActivationBytes < none.Parallel.SavedActivationBytes);

        var (serialLeast, parallelLeast) = MemoryPlan.LeastPeak(points);
        Assert.Equal(points.Min(p => p.Serial.PeakBytes), serialLeast.Serial.PeakBytes);
        Assert.Equal("temporal", parallelLeast.Recompute);  // tied with spatial+temporal: the one recomputing less
    }

    [Theory]
    [InlineData(LoopCorrectionMode.Scale)]
    [InlineData(LoopCorrectionMode.Mean)]
    public void The_plan_of_a_loop_correction_holds_its_exact_steps_with_the_optimizer_state(LoopCorrectionMode mode)
    {
        var config = ModelConfig.Get("micro");
        var options = new TrainOptions { Seed = 5, LearningRate = 1e-3f, LoopCorrectionEvery = 2, LoopCorrectionMode = mode };
        var plan = MemoryPlan.Plan(config, options);
        var plain = MemoryPlan.Plan(config, options with { LoopCorrectionEvery = 0 });

        using var cpu = new CpuBackend(1);
        using var model = TextToVideo.Create(cpu, config, Topology.Parallel, options.Seed);
        using var trainer = new Trainer(model, Comparison.Data(config, options.Seed, Split.Train), Stage.TextToVideo, options);
        var steps = Enumerable.Range(0, 3).Select(_ => trainer.TrainStep()).ToList();  // exact, corrected, exact with Adam's moments
        Assert.Equal(steps.Max(s => s.Memory.PeakBytes), plan.Parallel.PeakBytes);
        Assert.True(steps[2].Memory.PeakBytes > steps[0].Memory.PeakBytes, "the later exact step should peak higher");
        Assert.True(plan.Parallel.PeakBytes > plain.Parallel.PeakBytes, "the exact steps cost nothing in the plan");
        Assert.Equal(plain.Serial.PeakBytes, plan.Serial.PeakBytes);  // serial has nothing to correct
    }

    [Fact]
    public void A_meta_backend_computes_nothing_unless_asked_to_dry_run()
    {
        using var meta = new MetaBackend();
        using var a = Tensor.Empty(meta, new Shape(4));
        Assert.Throws<NotSupportedException>(() => Ops.Add(a, a));

        using var dry = new MetaBackend(dryRun: true);
        using var b = Tensor.FromArray(dry, [1f, 2f, 3f, 4f], new Shape(4));
        using var c = Ops.Add(b, b);
        Assert.Equal(new float[4], c.ToArray()); // nothing was computed: reads give zeros
        Assert.Equal(2 * 16, dry.Memory.CurrentBytes); // b and c, allocated as on a real backend
    }
}
