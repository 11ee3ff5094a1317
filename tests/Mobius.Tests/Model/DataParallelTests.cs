using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Cpu;
using Mobius.Engine.Distributed;
using Mobius.Model;
using Mobius.Model.Training;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>
/// Data parallel on the CPU backend, every rank on a backend of its own (one thread each): the host collectives
/// against a reference, and a data-parallel step against gradient accumulation over the same batches on one model.
/// </summary>
public sealed class DataParallelTests
{
    private static ModelConfig Micro => ModelConfig.Get("micro");

    [Fact]
    public void Host_collectives_average_in_rank_order_and_broadcast_the_roots_tensors_on_every_rank()
    {
        int seed = Seeds.One;
        var rng = new Rng(seed);
        var backends = Enumerable.Range(0, 3).Select(_ => new CpuBackend(threads: 1)).ToArray();
        try
        {
            Shape[] shapes = [new(5, 7), new(1), new(3, 2, 4)];
            var values = backends.Select(_ => shapes.Select(s => rng.Uniform(s.Numel, 2f)).ToArray()).ToArray();
            var tensors = backends.Select((b, r) => (IReadOnlyList<Tensor>)shapes.Select((s, i) => Tensor.FromArray(b, values[r][i], s)).ToList()).ToList();
            var collectives = new HostCollectives();
            collectives.AllReduceMean(tensors);
            for (int i = 0; i < shapes.Length; i++)
            {
                // In rank order, then scaled, as accumulation sums and scales; and against the mean in double.
                var inOrder = new float[shapes[i].Numel];
                var mean = new double[inOrder.Length];
                for (int k = 0; k < inOrder.Length; k++)
                {
                    inOrder[k] = (values[0][i][k] + values[1][i][k] + values[2][i][k]) * (1f / 3);
                    mean[k] = ((double)values[0][i][k] + values[1][i][k] + values[2][i][k]) / 3;
                }

                Assert.True(inOrder.Any(v => v != 0), "nonzero data");
                for (int r = 0; r < 3; r++)
                {
                    var got = tensors[r][i].ToArray();
                    Assert.True(got.AsSpan().SequenceEqual(inOrder), $"tensor {i} on rank {r}: not the rank-order mean (seed {seed})");
                    Close.All(got, mean, 1e-6, 1e-6, $"tensor {i} on rank {r} against the mean in double (seed {seed})");
                }
            }

            var fresh = backends.Select(_ => shapes.Select(s => rng.Uniform(s.Numel, 1f)).ToArray()).ToArray();
            for (int r = 0; r < 3; r++)
            {
                for (int i = 0; i < shapes.Length; i++)
                {
                    tensors[r][i].CopyFrom(fresh[r][i]);
                }
            }

            collectives.Broadcast(tensors, root: 1);
            for (int r = 0; r < 3; r++)
            {
                for (int i = 0; i < shapes.Length; i++)
                {
                    Assert.True(tensors[r][i].ToArray().AsSpan().SequenceEqual(fresh[1][i]), $"tensor {i} on rank {r} after the broadcast from rank 1");
                }
            }

            // Lists that do not line up are refused before anything is written.
            var before = tensors[0][0].ToArray();
            Assert.Throws<ArgumentException>(() => collectives.AllReduceMean([tensors[0], tensors[1].Take(2).ToList()]));
            Assert.Throws<ShapeMismatchException>(() => collectives.AllReduceMean([tensors[0], [tensors[1][1], tensors[1][0], tensors[1][2]]]));
            Assert.Throws<ArgumentOutOfRangeException>(() => collectives.Broadcast(tensors, root: 3));
            Assert.Throws<ArgumentException>(() => collectives.AllReduceMean([]));
            Assert.True(tensors[0][0].ToArray().AsSpan().SequenceEqual(before), "a refused collective wrote nothing");
            foreach (var t in tensors.SelectMany(t => t))
            {
                t.Dispose();
            }
        }
        finally
        {
            foreach (var b in backends)
            {
                b.Dispose();
            }
        }
    }

    /// <summary>
    /// Tensors for the bucket tests: in buckets of 400 floats, {0, 1, 2} (190 floats), {3, 4} (307), {5} alone (2000,
    /// reduced in place) and {6}: four buckets where one call per tensor takes seven.
    /// </summary>
    internal static readonly Shape[] BucketShapes = [new(33, 5), new(1), new(4, 3, 2), new(300), new(7), new(20, 100), new(13)];

    [Fact]
    public void Buckets_take_consecutive_tensors_up_to_the_size_and_a_larger_tensor_alone()
    {
        using var cpu = new CpuBackend(threads: 1);
        Tensor[] Of(params int[] numels) => [.. numels.Select(n => Tensor.Empty(cpu, new Shape(n)))];
        var tensors = Of(4, 4, 9, 1, 1, 2);
        try
        {
            // 32 bytes: {4, 4} fill one exactly; 9 floats is larger than a bucket and goes alone; {1, 1, 2} share one.
            Assert.Equal([(0, 2), (2, 3), (3, 6)], CollectiveBuckets.Of(tensors, 32));
            Assert.Equal([(0, 1), (1, 2), (2, 3), (3, 6)], CollectiveBuckets.Of(tensors, 31)); // {4, 4} no longer fit
            Assert.Equal([(0, 1), (1, 2), (2, 3), (3, 5), (5, 6)], CollectiveBuckets.Of(tensors, 8));
            Assert.Equal([(0, 6)], CollectiveBuckets.Of(tensors, CollectiveBuckets.DefaultBytes));
            Assert.Empty(CollectiveBuckets.Of([], 32));
            Assert.Equal(2, CollectiveBuckets.Elements(tensors, 3, 5));
            Assert.Same(tensors[2], Assert.Single(CollectiveBuckets.Slice(tensors, 2, 3)));
            Assert.Throws<ArgumentOutOfRangeException>(() => CollectiveBuckets.Of(tensors, 3));
        }
        finally
        {
            foreach (var t in tensors)
            {
                t.Dispose();
            }
        }
    }

    [Fact]
    public void Host_collectives_reduce_in_buckets_with_the_bits_of_one_transfer_per_tensor()
    {
        // Each bucket gathered into one buffer per rank, moved once each way and scattered back.
        var rng = new Rng(Seeds.One + 6);
        var backends = Enumerable.Range(0, 3).Select(_ => new CpuBackend(threads: 1)).ToArray();
        try
        {
            var shapes = BucketShapes;
            var values = backends.Select(_ => shapes.Select(s => rng.Uniform(s.Numel, 2f)).ToArray()).ToArray();
            List<IReadOnlyList<Tensor>> Upload() => [.. backends.Select((b, r) => (IReadOnlyList<Tensor>)shapes.Select((s, i) => Tensor.FromArray(b, values[r][i], s)).ToList())];
            var bucketed = Upload();
            var single = Upload();
            var host = new HostCollectives { BucketBytes = 400 * 4 };
            host.AllReduceMean(bucketed);
            Assert.Equal(4, host.LastTransfers);
            host.BucketBytes = 4;
            host.AllReduceMean(single);
            Assert.Equal(shapes.Length, host.LastTransfers);
            for (int i = 0; i < shapes.Length; i++)
            {
                var inOrder = new float[shapes[i].Numel];
                for (int k = 0; k < inOrder.Length; k++)
                {
                    inOrder[k] = (values[0][i][k] + values[1][i][k] + values[2][i][k]) * (1f / 3);
                }

                for (int r = 0; r < 3; r++)
                {
                    Assert.True(bucketed[r][i].ToArray().AsSpan().SequenceEqual(inOrder), $"tensor {i} on rank {r}: bucketed, not the rank-order mean");
                    Assert.True(single[r][i].ToArray().AsSpan().SequenceEqual(inOrder), $"tensor {i} on rank {r}: one transfer each, not the rank-order mean");
                }
            }

            Assert.Throws<ArgumentOutOfRangeException>(() => host.BucketBytes = 0);
            foreach (var t in bucketed.Concat(single).SelectMany(t => t))
            {
                t.Dispose();
            }
        }
        finally
        {
            foreach (var b in backends)
            {
                b.Dispose();
            }
        }
    }

    /// <summary>A micro model of the given seed's text-to-image weights with its zero-initialised outputs made nonzero, so every temporal parameter gets a gradient.</summary>
    internal static TextToVideo Model(IBackend backend, Topology topology, int seed, int initSeed)
    {
        using var t2i = TextToVideo.Create(backend, Micro, Topology.Spatial, seed);
        var m = TextToVideo.Create(backend, Micro, topology, initSeed);
        m.Unet.LoadStateDict(t2i.Unet.StateDict(), strict: false);
        m.Text.LoadStateDict(t2i.Text.StateDict());
        var r = new Rng(initSeed);
        foreach (var (_, p) in m.Unet.NamedParameters().Where(n => n.Name.Contains("proj_out") || n.Name.Contains("conv4")))
        {
            p.CopyFrom(r.Uniform(p.Numel, 0.05f));
        }

        return m;
    }

    /// <summary>
    /// After a data-parallel backward: every trainable gradient of rank 0 is nonzero, rank 1's (<paramref name="replica"/>)
    /// is the same bits, and accumulation's (<paramref name="accumulated"/>) is within rtol 1e-4 of it.
    /// </summary>
    internal static void AssertSameGradients(Trainer dataParallel, TextToVideo replica, Trainer accumulated, string what)
    {
        var replicaParameters = replica.Unet.NamedParameters().Concat(replica.Text.NamedParameters()).Where(n => !n.Parameter.Frozen);
        int compared = 0;
        foreach (var (((name, p0), (_, p1)), (_, pa)) in dataParallel.Optimizer.Parameters.Zip(replicaParameters).Zip(accumulated.Optimizer.Parameters))
        {
            var g0 = p0.Grad!.ToArray();
            Assert.True(g0.Any(v => v != 0), $"{name}: an all-zero gradient compares nothing ({what})");
            Assert.True(g0.AsSpan().SequenceEqual(p1.Grad!.ToArray()), $"{name}: rank 1's gradient is rank 0's to the bit ({what})");
            Close.All(g0, pa.Grad!.ToArray(), 1e-8, 1e-4, $"{name}: {what}");
            compared++;
        }

        Assert.True(compared > 10, $"{compared} gradients compared ({what})");
    }

    [Theory]
    [InlineData(Topology.Serial)]
    [InlineData(Topology.Parallel)]
    public void Two_ranks_take_the_gradient_and_the_steps_of_one_model_accumulating_their_batches(Topology topology)
    {
        int seed = Seeds.One;
        using var b0 = new CpuBackend(threads: 1);
        using var b1 = new CpuBackend(threads: 1);
        using var bAcc = new CpuBackend(threads: 1);
        using var rank0 = Model(b0, topology, seed, seed);
        using var rank1 = Model(b1, topology, seed, seed + 1); // other temporal weights: the trainer copies rank 0's over them
        using var single = Model(bAcc, topology, seed, seed);
        var data = Comparison.Data(Micro, seed, Split.Train);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-2f, Batch = 1 };
        using var dp = new Trainer(rank0, [rank1], data, Stage.TextToVideo, options with { Ranks = 2 });
        using var acc = new Trainer(single, data, Stage.TextToVideo, options with { Accumulate = 2 });

        var rank0Weights = rank0.Unet.StateDict();
        var rank1Weights = rank1.Unet.StateDict();
        Assert.All(rank0Weights, kv => Assert.True(kv.Value.AsSpan().SequenceEqual(rank1Weights[kv.Key]), $"{kv.Key}: rank 1 starts from rank 0's weights"));

        // One step's gradient: each rank backpropagates its own batch, then the mean of the two on both ranks.
        var batches = Enumerable.Range(1, 2).Select(i => dp.MakeBatch(data, i, seed, options.CaptionDropout, 1)).ToList();
        var (dpLoss, _, _) = dp.DataParallel(batches);
        var (accLoss, _, _) = acc.Accumulated(batches);
        Assert.Equal(accLoss, dpLoss, 1e-6 * Math.Abs(accLoss));
        AssertSameGradients(dp, rank1, acc, $"{topology}, two ranks against accumulation (seed {seed})");
        dp.Optimizer.ZeroGrad();
        acc.Optimizer.ZeroGrad();

        // Whole steps: the first takes those batches (its loss is the one above, to the bit), every rank steps alike,
        // and the losses follow accumulation's.
        using var freshB0 = new CpuBackend(threads: 1);
        using var freshB1 = new CpuBackend(threads: 1);
        using var fresh0 = Model(freshB0, topology, seed, seed);
        using var fresh1 = Model(freshB1, topology, seed, seed);
        using var stepper = new Trainer(fresh0, [fresh1], data, Stage.TextToVideo, options with { Ranks = 2 });
        for (int step = 1; step <= 3; step++)
        {
            float dpStep = stepper.TrainStep().Loss;
            float accStep = acc.TrainStep().Loss;
            if (step == 1)
            {
                Assert.Equal(dpLoss, dpStep);
            }

            Assert.Equal(accStep, dpStep, 1e-4 * Math.Abs(accStep));
        }

        var w0 = fresh0.Unet.StateDict();
        var w1 = fresh1.Unet.StateDict();
        var wAcc = single.Unet.StateDict();
        Assert.Contains(w0, kv => !kv.Value.AsSpan().SequenceEqual(rank0Weights[kv.Key])); // it trained
        foreach (var (name, values) in w0)
        {
            Assert.True(values.AsSpan().SequenceEqual(w1[name]), $"{name}: the ranks' weights after 3 steps are the same bits");
        }
    }

    [Fact]
    public void Validation_spreads_its_batches_over_the_ranks_and_gives_rank_0s_losses_in_order()
    {
        int seed = Seeds.One + 3;
        var data = Comparison.Data(Micro, seed, Split.Train);
        var held = Comparison.Data(Micro, seed, Split.Validation);
        using var b0 = new CpuBackend(threads: 1);
        using var b1 = new CpuBackend(threads: 1);
        using var bAlone = new CpuBackend(threads: 1);
        using var m0 = Model(b0, Topology.Parallel, seed, seed);
        using var m1 = Model(b1, Topology.Parallel, seed, seed);
        using var alone = Model(bAlone, Topology.Parallel, seed, seed);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-2f, Batch = 1 };
        using var dp = new Trainer(m0, [m1], data, Stage.TextToVideo, options with { Ranks = 2 });
        using var one = new Trainer(alone, data, Stage.TextToVideo, options);
        var (spread, single) = (new List<double>(), new List<double>());
        float lossSpread = dp.Evaluate(held, 5, seed, spread);   // batches 0, 2, 4 on rank 0; 1, 3 on rank 1
        float lossSingle = one.Evaluate(held, 5, seed, single);
        Assert.Equal(lossSingle, lossSpread);
        Assert.Equal(5 * Micro.Batch, spread.Count);
        Assert.Equal(single, spread);
        Assert.True(spread.Distinct().Count() > 1, "different clips, different losses");
    }

    [Fact]
    public void A_data_parallel_run_resumes_exactly_and_its_checkpoint_keeps_the_ranks()
    {
        int seed = Seeds.One + 7;
        using var folder = new TempFolder();
        var data = Comparison.Data(Micro, seed, Split.Train);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-2f, Batch = 1, Ranks = 2 };

        float[] Run(int steps, string? save, out Dictionary<string, float[]> weights)
        {
            using var b0 = new CpuBackend(threads: 1);
            using var b1 = new CpuBackend(threads: 1);
            using var m0 = TextToVideo.Create(b0, Micro, Topology.Parallel, seed);
            using var m1 = TextToVideo.Create(b1, Micro, Topology.Parallel, seed);
            using var t = new Trainer(m0, [m1], data, Stage.TextToVideo, options);
            var losses = Enumerable.Range(0, steps).Select(_ => t.TrainStep().Loss).ToArray();
            if (save is not null)
            {
                t.Save(save);
            }

            weights = m0.Unet.StateDict();
            return losses;
        }

        var straight = Run(4, null, out var expected);
        string path = folder.File("half.safetensors");
        var firstHalf = Run(2, path, out _);
        var ckpt = Checkpoint.Load(path);
        Assert.Equal(2, ckpt.TrainOptions!.Ranks);

        using var r0 = new CpuBackend(threads: 1);
        using var r1 = new CpuBackend(threads: 1);
        using var resumed0 = TextToVideo.Load(r0, ckpt, Topology.Parallel, seed);
        using var resumed1 = TextToVideo.Load(r1, ckpt, Topology.Parallel, seed);
        using var trainer = new Trainer(resumed0, [resumed1], data, Stage.TextToVideo, ckpt.TrainOptions);
        trainer.Resume(ckpt);
        var secondHalf = new[] { trainer.TrainStep().Loss, trainer.TrainStep().Loss };
        Assert.Equal(straight, firstHalf.Concat(secondHalf).ToArray());
        var got = resumed0.Unet.StateDict();
        var gotReplica = resumed1.Unet.StateDict();
        foreach (var (name, values) in expected)
        {
            Assert.True(values.AsSpan().SequenceEqual(got[name]), $"{name} differs after resume");
            Assert.True(values.AsSpan().SequenceEqual(gotReplica[name]), $"{name} differs on rank 1 after resume");
        }
    }

    [Fact]
    public void A_rank_that_runs_out_of_memory_fails_the_step_and_no_rank_moves()
    {
        int seed = Seeds.One + 11;
        var data = Comparison.Data(Micro, seed, Split.Train);
        using var b0 = new CpuBackend(threads: 1);
        using var m0 = TextToVideo.Create(b0, Micro, Topology.Serial, seed);
        long weights = b0.Memory.CurrentBytes;

        // Room for the weights, the optimizer's moments and a little more, not for a step's activations.
        using var b1 = new CpuBackend(threads: 1, memoryLimitBytes: 3 * weights);
        using var m1 = TextToVideo.Create(b1, Micro, Topology.Serial, seed);
        using var trainer = new Trainer(m0, [m1], data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f, Batch = 2, Ranks = 2 });
        var before0 = trainer.TrainableSnapshot();
        var before1 = m1.Unet.StateDict();
        var e = Assert.Throws<OutOfDeviceMemoryException>(() => trainer.TrainStep());
        Assert.Contains("cpu", e.Message);
        Assert.Equal(0, trainer.StepsDone);
        Assert.All(trainer.Optimizer.Parameters, p => Assert.Null(p.Parameter.Grad));
        Assert.All(trainer.TrainableSnapshot(), kv => Assert.True(kv.Value.AsSpan().SequenceEqual(before0[kv.Key]), $"{kv.Key} moved on rank 0"));
        Assert.All(m1.Unet.StateDict(), kv => Assert.True(kv.Value.AsSpan().SequenceEqual(before1[kv.Key]), $"{kv.Key} moved on rank 1"));
    }

    [Fact]
    public void Ranks_that_do_not_add_up_share_a_backend_differ_in_config_or_meet_the_loop_correction_are_refused()
    {
        int seed = Seeds.One;
        var data = Comparison.Data(Micro, seed, Split.Train);
        using var b0 = new CpuBackend(threads: 1);
        using var b1 = new CpuBackend(threads: 1);
        using var m0 = TextToVideo.Create(b0, Micro, Topology.Parallel, seed);
        using var m1 = TextToVideo.Create(b1, Micro, Topology.Parallel, seed);
        using var sameBackend = TextToVideo.Create(b0, Micro, Topology.Parallel, seed);
        using var serial = TextToVideo.Create(b1, Micro, Topology.Serial, seed);
        var two = new TrainOptions { Seed = seed, Ranks = 2 };
        Assert.Contains("1 replica(s)", Assert.Throws<ArgumentException>(() => new Trainer(m0, [], data, Stage.TextToVideo, two)).Message);
        Assert.Contains("1 replica(s) were given", Assert.Throws<ArgumentException>(() => new Trainer(m0, [m1], data, Stage.TextToVideo, new TrainOptions { Seed = seed })).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Trainer(m0, [], data, Stage.TextToVideo, two with { Ranks = 0 }));
        Assert.Contains("backend of its own", Assert.Throws<ArgumentException>(() => new Trainer(m0, [sameBackend], data, Stage.TextToVideo, two)).Message);
        Assert.Contains("topology", Assert.Throws<ArgumentException>(() => new Trainer(m0, [serial], data, Stage.TextToVideo, two)).Message);
        Assert.Contains("data parallel", Assert.Throws<ArgumentException>(() => new Trainer(m0, [m1], data, Stage.TextToVideo, two with { LoopCorrectionEvery = 4 })).Message);
    }
}

/// <summary>
/// Data parallel on the CUDA backend (the simulated driver here, a GPU in the GPU run): two backends, a rank each,
/// driven from two threads at once (each makes its context current on its own thread), their gradients averaged
/// through the host; against accumulating the same batches on the fixture's backend.
/// </summary>
public sealed class CudaDataParallelTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    /// <summary>Ranks on one device: the simulator's NCCL takes that; a real NCCL needs a device per rank.</summary>
    private bool NcclCanRun(int ranks, out string why)
    {
        if (!Mobius.Cuda.NcclCollectives.Available(out _, out var missing))
        {
            why = "NCCL not found: " + missing;
            return false;
        }

        why = $"NCCL takes a device per rank; {ranks} ranks, {Mobius.Cuda.CudaDevice.List().Count} device(s)";
        return fixture.Simulated || Mobius.Cuda.CudaDevice.List().Count >= ranks;
    }

    [Theory]
    [InlineData("host")]
    [InlineData("nccl")]
    public void Two_cuda_ranks_on_threads_of_their_own_take_the_gradient_of_accumulating_their_batches(string collectives)
    {
        bool nccl = collectives == "nccl";
        string why = "";
        Assert.SkipWhen(nccl && !NcclCanRun(2, out why), why);
        var micro = ModelConfig.Get("micro");
        int seed = Seeds.One;
        using var b0 = new Mobius.Cuda.CudaBackend(0) { PoisonAllocations = true };
        using var b1 = new Mobius.Cuda.CudaBackend(fixture.Simulated || !nccl ? 0 : 1) { PoisonAllocations = true };
        using var reduce = nccl ? new Mobius.Cuda.NcclCollectives([b0, b1]) : null;
        using var rank0 = DataParallelTests.Model(b0, Topology.Parallel, seed, seed);
        using var rank1 = DataParallelTests.Model(b1, Topology.Parallel, seed, seed + 1);
        using var single = DataParallelTests.Model(fixture.Backend, Topology.Parallel, seed, seed);
        var data = Comparison.Data(micro, seed, Split.Train);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-2f, Batch = 1 };
        using var dp = new Trainer(rank0, [rank1], data, Stage.TextToVideo, options with { Ranks = 2 }, reduce);
        using var acc = new Trainer(single, data, Stage.TextToVideo, options with { Accumulate = 2 });
        Assert.True(rank0.Unet.StateDict().All(kv => kv.Value.AsSpan().SequenceEqual(rank1.Unet.StateDict()[kv.Key])), $"{collectives}: rank 1 starts from rank 0's weights");
        var batches = Enumerable.Range(1, 2).Select(i => dp.MakeBatch(data, i, seed, options.CaptionDropout, 1)).ToList();
        var (dpLoss, _, _) = dp.DataParallel(batches);
        var (accLoss, _, _) = acc.Accumulated(batches);
        Assert.Equal(accLoss, dpLoss, 1e-5 * Math.Abs(accLoss));
        DataParallelTests.AssertSameGradients(dp, rank1, acc, $"two cuda ranks ({collectives}) against accumulation (seed {seed})");
    }
}

/// <summary>
/// The NCCL binding (the simulated NCCL here; on a GPU machine the real one, as many ranks as it has devices, up to
/// three): grouped all-reduce and broadcast against the host's arithmetic, and the checks before anything moves.
/// </summary>
public sealed class CudaNcclCollectivesTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    /// <summary>
    /// The all-reduce in buckets: consecutive tensors that fit a bucket are gathered into one flat buffer per rank,
    /// reduced with one call and scattered back; a tensor larger than a bucket goes on its own, in place. Each
    /// tensor gets its own mean, the bits of reducing every tensor by itself.
    /// </summary>
    [Fact]
    public void Nccl_all_reduces_in_buckets_with_the_bits_of_one_call_per_tensor()
    {
        Assert.SkipUnless(Mobius.Cuda.NcclCollectives.Available(out _, out var missing), "NCCL not found: " + missing);
        int ranks = fixture.Simulated ? 3 : Math.Min(3, Mobius.Cuda.CudaDevice.List().Count);
        var rng = new Rng(Seeds.One + 5);
        var backends = Enumerable.Range(0, ranks).Select(r => new Mobius.Cuda.CudaBackend(fixture.Simulated ? 0 : r) { PoisonAllocations = true }).ToArray();
        try
        {
            using var nccl = new Mobius.Cuda.NcclCollectives(backends);
            var shapes = DataParallelTests.BucketShapes;
            var values = backends.Select(_ => shapes.Select(s => rng.Uniform(s.Numel, 2f)).ToArray()).ToArray();
            List<IReadOnlyList<Tensor>> Upload() => [.. backends.Select((b, r) => (IReadOnlyList<Tensor>)shapes.Select((s, i) => Tensor.FromArray(b, values[r][i], s)).ToList())];
            var bucketed = Upload();
            var single = Upload();
            nccl.BucketBytes = 400 * 4;
            nccl.AllReduceMean(bucketed);
            Assert.Equal(4, nccl.LastCalls);
            nccl.BucketBytes = 4;
            nccl.AllReduceMean(single);
            Assert.Equal(shapes.Length, nccl.LastCalls);
            for (int i = 0; i < shapes.Length; i++)
            {
                var mean = new double[shapes[i].Numel];
                for (int k = 0; k < mean.Length; k++)
                {
                    mean[k] = Enumerable.Range(0, ranks).Sum(r => (double)values[r][i][k]) / ranks;
                }

                for (int r = 0; r < ranks; r++)
                {
                    var got = bucketed[r][i].ToArray();
                    Assert.True(got.AsSpan().SequenceEqual(single[r][i].ToArray()), $"tensor {i} on rank {r}: bucketed against one call per tensor");
                    Close.All(got, mean, 1e-6, 1e-5, $"tensor {i} on rank {r} of {ranks}");
                }
            }

            Assert.Throws<ArgumentOutOfRangeException>(() => nccl.BucketBytes = 2);
            foreach (var t in bucketed.Concat(single).SelectMany(t => t))
            {
                t.Dispose();
            }
        }
        finally
        {
            foreach (var b in backends)
            {
                b.Dispose();
            }
        }
    }

    [Fact]
    public void Nccl_averages_and_broadcasts_each_ranks_tensors_on_the_devices()
    {
        Assert.SkipUnless(Mobius.Cuda.NcclCollectives.Available(out _, out var missing), "NCCL not found: " + missing);
        int ranks = fixture.Simulated ? 3 : Math.Min(3, Mobius.Cuda.CudaDevice.List().Count);
        int seed = Seeds.One;
        var rng = new Rng(seed);
        var backends = Enumerable.Range(0, ranks).Select(r => new Mobius.Cuda.CudaBackend(fixture.Simulated ? 0 : r) { PoisonAllocations = true }).ToArray();
        try
        {
            using var nccl = new Mobius.Cuda.NcclCollectives(backends);
            Assert.StartsWith("nccl 2.", nccl.Name);
            Shape[] shapes = [new(33, 5), new(1), new(4, 3, 2)];
            var values = backends.Select(_ => shapes.Select(s => rng.Uniform(s.Numel, 2f)).ToArray()).ToArray();
            var tensors = backends.Select((b, r) => (IReadOnlyList<Tensor>)shapes.Select((s, i) => Tensor.FromArray(b, values[r][i], s)).ToList()).ToList();
            nccl.AllReduceMean(tensors);
            for (int i = 0; i < shapes.Length; i++)
            {
                var mean = new double[shapes[i].Numel];
                for (int k = 0; k < mean.Length; k++)
                {
                    mean[k] = Enumerable.Range(0, ranks).Sum(r => (double)values[r][i][k]) / ranks;
                }

                Assert.Contains(mean, v => v != 0);
                var first = tensors[0][i].ToArray();
                for (int r = 0; r < ranks; r++)
                {
                    var got = tensors[r][i].ToArray();
                    Close.All(got, mean, 1e-6, 1e-5, $"tensor {i} on rank {r} of {ranks} (seed {seed})");
                    Assert.True(got.AsSpan().SequenceEqual(first), $"tensor {i}: rank {r} holds rank 0's bits");
                }
            }

            int root = ranks - 1;
            var fresh = shapes.Select(s => rng.Uniform(s.Numel, 1f)).ToArray();
            for (int i = 0; i < shapes.Length; i++)
            {
                tensors[root][i].CopyFrom(fresh[i]);
            }

            nccl.Broadcast(tensors, root);
            for (int r = 0; r < ranks; r++)
            {
                for (int i = 0; i < shapes.Length; i++)
                {
                    Assert.True(tensors[r][i].ToArray().AsSpan().SequenceEqual(fresh[i]), $"tensor {i} on rank {r} after the broadcast from rank {root}");
                }
            }

            // Refused before anything is issued: a rank's tensor on another rank's backend, the wrong number of ranks.
            if (ranks > 1)
            {
                var swapped = tensors.ToList();
                (swapped[0], swapped[1]) = (swapped[1], swapped[0]);
                Assert.Contains("not on that rank's backend", Assert.Throws<ArgumentException>(() => nccl.AllReduceMean(swapped)).Message);
            }

            Assert.Throws<ArgumentException>(() => nccl.AllReduceMean([.. tensors, tensors[0]]));
            foreach (var t in tensors.SelectMany(t => t))
            {
                t.Dispose();
            }
        }
        finally
        {
            foreach (var b in backends)
            {
                b.Dispose();
            }
        }
    }
}
