using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Model;
using Mobius.Model.Diffusion;
using Mobius.Model.Training;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>Training end to end on the micro config: learning, checkpoints, exact resume.</summary>
public abstract class TrainingTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    private static ModelConfig Micro => ModelConfig.Get("micro");

    private static EmojiClips Clips(int seed, Split split = Split.Train) => Comparison.Data(Micro, seed, split);

    [Theory]
    [InlineData(Topology.Serial)]
    [InlineData(Topology.Parallel)]
    public void A_few_steps_lower_the_loss(Topology topology)
    {
        // 25 steps of each topology take about four minutes on the simulator (one core, thread by thread) and
        // would be a third of CI. On the simulator the CUDA path is covered op by op (CudaOpGradientTests) and
        // through the whole model's forward and backward (CudaTorchParityTests, resume and sampling below);
        // this test runs on the CPU here and on the GPU in scripts/gpu-run.sh.
        Assert.SkipWhen(fixture.Simulated, "25 training steps on the CUDA simulator take minutes; run on a real GPU by scripts/gpu-run.sh");
        int seed = Seeds.One;
        using var t2i = TextToVideo.Create(B, Micro, Topology.Spatial, seed);
        using var model = TextToVideo.Create(B, Micro, topology, seed);
        model.Unet.LoadStateDict(t2i.Unet.StateDict(), strict: false);
        model.Text.LoadStateDict(t2i.Text.StateDict());
        var data = Clips(seed);
        using var trainer = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 2e-3f, CaptionDropout = 0 });

        // The same fixed batches before and after: a learning model lowers their loss.
        float before = trainer.Evaluate(data, 3, seed);
        for (int i = 0; i < 25; i++)
        {
            var s = trainer.TrainStep();
            Assert.True(float.IsFinite(s.Loss), $"step {s.Step} loss {s.Loss} (seed {seed})");
        }

        float after = trainer.Evaluate(data, 3, seed);
        Assert.True(after < before * 0.97, $"{topology}: loss {before:0.0000} -> {after:0.0000} after 25 steps (seed {seed})");
        Assert.All(model.Unet.SpatialParameters(), p => Assert.Null(p.Parameter.Grad));
    }

    [Theory]
    [InlineData(Topology.Serial)]
    [InlineData(Topology.Parallel)]
    public void Accumulating_two_batches_of_one_clip_gives_the_gradient_of_one_batch_of_both_at_half_the_activations(Topology topology)
    {
        int seed = Seeds.One;
        using var t2i = TextToVideo.Create(B, Micro, Topology.Spatial, seed);
        TextToVideo Model()
        {
            var m = TextToVideo.Create(B, Micro, topology, seed);
            m.Unet.LoadStateDict(t2i.Unet.StateDict(), strict: false);
            m.Text.LoadStateDict(t2i.Text.StateDict());

            // Nonzero zero-initialised outputs, so that every temporal parameter gets a gradient.
            var r = new Rng(seed);
            foreach (var (name, p) in m.Unet.NamedParameters().Where(n => n.Name.Contains("proj_out") || n.Name.Contains("conv4")))
            {
                p.CopyFrom(r.Uniform(p.Numel, 0.05f));
            }

            return m;
        }

        using var wholeModel = Model();
        using var partsModel = Model();
        using var stepModel = Model();
        var data = Clips(seed);
        using var whole = new Trainer(wholeModel, data, Stage.TextToVideo, new TrainOptions { Seed = seed, Batch = 2 });
        var accumulate = new TrainOptions { Seed = seed, Batch = 1, Accumulate = 2 };
        using var parts = new Trainer(partsModel, data, Stage.TextToVideo, accumulate);
        var first = parts.MakeBatch(data, 1, seed, accumulate.CaptionDropout, 1);
        var second = parts.MakeBatch(data, 2, seed, accumulate.CaptionDropout, 1);
        var both = new Trainer.Batch([.. first.NoisyLatents, .. second.NoisyLatents], [.. first.Noise, .. second.Noise],
            [.. first.Timesteps, .. second.Timesteps], [.. first.Captions, .. second.Captions], first.Frames,
            new Shape([first.Shape[0] + second.Shape[0], .. first.Shape.Skip(1)]));

        var (wholeLoss, wholeSaved, _) = whole.Backprop(both);
        var (partsLoss, partsSaved, _) = parts.Accumulated([first, second]);
        Assert.Equal(wholeLoss, partsLoss, 1e-5 * Math.Abs(wholeLoss) + 1e-7);
        int compared = 0;
        foreach (var ((name, pw), (_, pp)) in whole.Optimizer.Parameters.Zip(parts.Optimizer.Parameters))
        {
            if (pw.Grad is null)
            {
                Assert.Null(pp.Grad);
                continue;
            }

            var gw = pw.Grad.ToArray();
            Assert.True(gw.Any(v => v != 0), $"{name}: an all-zero gradient compares nothing (seed {seed})");
            Close.All(pp.Grad!.ToArray(), gw, 1e-4, 1e-7, $"{topology} {name} (seed {seed})");
            compared++;
        }

        Assert.True(compared > 10, $"{compared} gradients compared");
        Assert.True(partsSaved < 0.6 * wholeSaved, $"{topology}: one clip at a time kept {partsSaved} bytes, both at once {wholeSaved} (seed {seed})");

        // TrainStep takes those batches (the first two a run without accumulation takes) and that gradient.
        using var stepper = new Trainer(stepModel, data, Stage.TextToVideo, accumulate);
        var stats = stepper.TrainStep();
        Assert.Equal(partsLoss, stats.Loss);
        parts.Optimizer.Lr = accumulate.LearningRateAt(1);
        parts.Optimizer.Step(accumulate.MaxGradNorm);
        foreach (var ((name, pp), (_, ps)) in parts.Optimizer.Parameters.Zip(stepper.Optimizer.Parameters))
        {
            Assert.True(pp.ToArray().AsSpan().SequenceEqual(ps.ToArray()), $"{name} after the accumulated step (seed {seed})");
        }

        Assert.Throws<ArgumentException>(() => new Trainer(stepModel, data, Stage.TextToVideo, accumulate with { LoopCorrectionEvery = 4 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Trainer(stepModel, data, Stage.TextToVideo, accumulate with { Accumulate = 0 }));
    }

    [Fact]
    public void The_weights_moving_average_follows_its_definition_swaps_in_and_out_exactly_and_resumes_exactly()
    {
        int seed = Seeds.One;
        using var dir = new TempFolder();
        using var t2i = TextToVideo.Create(B, Micro, Topology.Spatial, seed);
        TextToVideo Model()
        {
            var m = TextToVideo.Create(B, Micro, Topology.Parallel, seed);
            m.Unet.LoadStateDict(t2i.Unet.StateDict(), strict: false);
            m.Text.LoadStateDict(t2i.Text.StateDict());
            return m;
        }

        const float decay = 0.95f;
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-2f, EmaDecay = decay };
        var data = Clips(seed);
        using var model = Model();
        using var trainer = new Trainer(model, data, Stage.TextToVideo, options);

        // The reference on the host: ema_0 = w_0, ema_t = a_t ema_(t-1) + (1 - a_t) w_t, a_t = min(decay, (1 + t) / (10 + t)).
        var ema = trainer.TrainableSnapshot();
        Assert.Equal(ema.Keys, trainer.EmaSnapshot()!.Keys);
        for (int t = 1; t <= 3; t++)
        {
            trainer.TrainStep();
            float a = Trainer.EmaDecayAt(decay, t);
            Assert.Equal(Math.Min(decay, (1f + t) / (10f + t)), a);
            foreach (var (name, w) in trainer.TrainableSnapshot())
            {
                ema[name] = [.. ema[name].Zip(w, (e, x) => a * e + (1 - a) * x)];
            }
        }

        var kept = trainer.EmaSnapshot()!;
        var trained = trainer.TrainableSnapshot();
        Assert.Contains(trained, kv => !kv.Value.AsSpan().SequenceEqual(kept[kv.Key]));   // the average is not the weights
        foreach (var (name, expected) in ema)
        {
            Close.All(kept[name], expected, 1e-5, 1e-7, $"EMA of {name} after 3 steps (seed {seed})");
        }

        // In place for evaluation, then the trained weights back to the bit; no training step in between.
        using (trainer.EmaWeights())
        {
            Assert.All(trainer.TrainableSnapshot(), kv => Assert.True(kv.Value.AsSpan().SequenceEqual(kept[kv.Key]), kv.Key));
            Assert.Throws<InvalidOperationException>(() => trainer.TrainStep());
        }

        Assert.All(trainer.TrainableSnapshot(), kv => Assert.True(kv.Value.AsSpan().SequenceEqual(trained[kv.Key]), kv.Key));

        // A checkpoint keeps it; WithEma puts it in place of the trained weights; a resumed run continues it exactly.
        string path = dir.File("ema.safetensors");
        trainer.Save(path);
        var ckpt = Checkpoint.Load(path);
        Assert.All(kept, kv => Assert.True(ckpt.Ema![kv.Key].AsSpan().SequenceEqual(kv.Value), kv.Key));
        var averaged = ckpt.WithEma();
        Assert.All(kept.Where(kv => kv.Key.StartsWith("unet.", StringComparison.Ordinal)),
            kv => Assert.True(averaged.Unet[kv.Key["unet.".Length..]].AsSpan().SequenceEqual(kv.Value), kv.Key));
        Assert.Equal(ckpt.Unet.Count, averaged.Unet.Count);
        using var resumedModel = TextToVideo.Load(B, ckpt, Topology.Parallel, seed);
        using var resumed = new Trainer(resumedModel, data, Stage.TextToVideo, ckpt.TrainOptions!);
        resumed.Resume(ckpt);
        trainer.TrainStep();
        resumed.TrainStep();
        var a4 = trainer.EmaSnapshot()!;
        Assert.All(resumed.EmaSnapshot()!, kv => Assert.True(kv.Value.AsSpan().SequenceEqual(a4[kv.Key]), $"{kv.Key} after a resumed step (seed {seed})"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Trainer(resumedModel, data, Stage.TextToVideo, options with { EmaDecay = 1f }));
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Min_snr_weighting_weights_each_item_by_its_timestep(int seed)
    {
        // Reference on the host: loss = sum_i min(SNR_i, gamma) / SNR_i * mean_i((e - t)^2) / items, whose
        // gradient in e is 2 w_i (e - t) / (items * n_i); the plain MSE (gamma 0) has w_i = 1.
        var r = new Rng(seed);
        int items = r.Int(2, 4), per = r.Int(1, 3), size = r.Int(3, 7);
        float gamma = r.Pick(1f, 5f);
        var schedule = new NoiseSchedule();
        var timesteps = new int[items * per];
        for (int i = 0; i < items; i++)
        {
            Array.Fill(timesteps, i == 0 ? r.Int(0, 30) : r.Int(0, schedule.Steps - 1), i * per, per);
        }

        var shape = new Shape(items * per, size);
        var e = r.Uniform(shape.Numel);
        var t = r.Uniform(shape.Numel);
        foreach (float g in new[] { 0f, gamma })
        {
            using var tape = Tape.Begin();
            using var eps = Tensor.FromArray(B, e, shape).SetRequiresGrad();
            using var target = Tensor.FromArray(B, t, shape);
            using var loss = Trainer.DiffusionLoss(eps, target, timesteps, items, schedule, g, out var plain);
            using (plain)
            {
                loss.Backward();
                double expected = 0, mse = 0;
                var grad = eps.Grad!.ToArray();
                int n = per * size;
                for (int i = 0; i < items; i++)
                {
                    double ab = schedule.AlphasCumprod[timesteps[i * per]], snr = ab / (1 - ab);
                    double w = g == 0 ? 1 : Math.Min(snr, g) / snr;
                    double sq = 0;
                    for (int j = i * n; j < (i + 1) * n; j++)
                    {
                        sq += (e[j] - t[j]) * (double)(e[j] - t[j]);
                        double dj = 2 * w * (e[j] - t[j]) / (items * n);
                        Assert.True(Math.Abs(grad[j] - dj) <= 1e-6 + 1e-4 * Math.Abs(dj), $"gamma {g}, element {j}: gradient {grad[j]} vs {dj} (seed {seed})");
                    }

                    expected += w * sq / n / items;
                    mse += sq / n / items;
                }

                Assert.True(Math.Abs(loss.Item() - expected) <= 1e-5 * expected, $"gamma {g}: loss {loss.Item()} vs {expected} (seed {seed})");
                Assert.True(Math.Abs(plain.Item() - mse) <= 1e-5 * mse, $"gamma {g}: reported loss {plain.Item()} vs plain MSE {mse} (seed {seed})");
                Assert.False(plain.RequiresGrad);
            }
        }

        // Item 0 sits at a nearly clean timestep (SNR far above any gamma): the weighting shrinks it.
        double ab0 = schedule.AlphasCumprod[timesteps[0]];
        Assert.True(ab0 / (1 - ab0) > 5 * gamma, $"item 0's SNR {ab0 / (1 - ab0)} (seed {seed})");
        using var bad1 = Tensor.FromArray(B, e, shape);
        using var bad2 = Tensor.FromArray(B, t, shape);
        Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.DiffusionLoss(bad1, bad2, timesteps, items, schedule, -1f, out _));
    }

    [Fact]
    public void Min_snr_weighting_keeps_no_extra_activation()
    {
        // The weighting reads the saved prediction and target through views: the tape keeps the same bytes.
        int seed = Seeds.One;
        long Saved(float gamma)
        {
            using var model = TextToVideo.Create(B, Micro, Topology.Serial, seed);
            using var trainer = new Trainer(model, Clips(seed), Stage.TextToVideo, new TrainOptions { Seed = seed, MinSnrGamma = gamma });
            return trainer.TrainStep().SavedActivationBytes;
        }

        Assert.Equal(Saved(0f), Saved(5f));
    }

    [Theory]
    [InlineData(Topology.Serial)]
    [InlineData(Topology.Parallel)]
    public void A_batch_other_than_the_configs_trains_on_the_mean_of_its_clips(Topology topology)
    {
        // TrainOptions.Batch (--batch): a step of B clips, here 3 where micro's config says 2, has the mean of its
        // clips' losses and gradients. The reference is each clip alone through the same model: nothing may mix
        // clips of a batch (norms, temporal layers, text context, the loss).
        Assert.SkipWhen(fixture.Simulated && topology == Topology.Serial,
            "a minute on the CUDA simulator; the parallel case runs the same kernels there, and the op tests cover other batch sizes");
        int seed = Seeds.One;
        const int clips = 3;
        var data = Clips(seed);
        using var model = TextToVideo.Create(B, Micro, topology, seed);
        using var trainer = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed, Batch = clips, LearningRate = 1e-2f });
        Assert.Equal(clips, trainer.BatchSize);

        // Trainable weights moved at random, so that the zero-initialised temporal outputs are not zero and every tensor has a gradient.
        var r = new Rng(seed);
        foreach (var (_, p) in trainer.Optimizer.Parameters)
        {
            p.CopyFrom(p.ToArray().Zip(r.Uniform(p.Numel, 0.05f), (v, d) => v + d).ToArray());
        }

        var batch = trainer.MakeBatch(data, 1, seed, trainer.Options.CaptionDropout, clips);
        Assert.Equal(clips * Micro.Frames, batch.Shape[0]);
        Assert.Equal(clips, batch.Captions.Length);
        float whole = trainer.Backprop(batch).Loss;
        var grads = trainer.Optimizer.Parameters.ToDictionary(np => np.Name, np => np.Parameter.Grad!.ToArray());
        trainer.Optimizer.ZeroGrad();

        int perClip = batch.NoisyLatents.Length / clips;
        var shape = new Shape([Micro.Frames, .. batch.Shape.Skip(1)]);
        double meanLoss = 0;
        var meanGrads = grads.ToDictionary(kv => kv.Key, kv => new double[kv.Value.Length]);
        for (int c = 0; c < clips; c++)
        {
            var one = new Trainer.Batch(batch.NoisyLatents[(c * perClip)..((c + 1) * perClip)], batch.Noise[(c * perClip)..((c + 1) * perClip)],
                batch.Timesteps[(c * Micro.Frames)..((c + 1) * Micro.Frames)], [batch.Captions[c]], batch.Frames, shape);
            meanLoss += trainer.Backprop(one).Loss / (double)clips;
            foreach (var (name, p) in trainer.Optimizer.Parameters)
            {
                var g = p.Grad!.ToArray();
                for (int i = 0; i < g.Length; i++)
                {
                    meanGrads[name][i] += g[i] / (double)clips;
                }
            }

            trainer.Optimizer.ZeroGrad();
        }

        Assert.True(Math.Abs(whole - meanLoss) <= 1e-5 * Math.Abs(meanLoss), $"{topology}: batch loss {whole}, mean of its clips' {meanLoss} (seed {seed})");
        foreach (var (name, g) in grads)
        {
            double scale = meanGrads[name].Max(Math.Abs);
            Assert.True(scale > 0, $"{name} has no gradient (seed {seed})");
            for (int i = 0; i < g.Length; i++)
            {
                Assert.True(Math.Abs(g[i] - meanGrads[name][i]) <= 1e-4 * scale, $"{topology} {name}[{i}]: batch {g[i]}, mean of its clips {meanGrads[name][i]} (seed {seed})");
            }
        }

        // The trainer's own first step is that batch; validation keeps the config's batch whatever the training one.
        Assert.Equal(whole, trainer.TrainStep().Loss, 6);
        float validation = trainer.Evaluate(Clips(seed, Split.Validation), 1, seed);
        using var plain = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed });
        Assert.Equal(2, plain.BatchSize);
        Assert.Equal(validation, plain.Evaluate(Clips(seed, Split.Validation), 1, seed));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Batch = -1 }));
    }

    [Theory]
    [InlineData(Topology.Serial)]
    [InlineData(Topology.Parallel)]
    public void A_snapshot_of_the_trainable_weights_restores_them_and_their_validation_loss(Topology topology)
    {
        int seed = Seeds.One;
        using var model = TextToVideo.Create(B, Micro, topology, seed);
        using var trainer = new Trainer(model, Clips(seed), Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f });
        var validation = Clips(seed, Split.Validation);
        var spatialBefore = model.Unet.SpatialParameters().Select(p => p.Parameter.ToArray()).ToList();

        var snapshot = trainer.TrainableSnapshot();
        Assert.Equal(trainer.TrainableParameters, snapshot.Values.Sum(v => (long)v.Length));
        float before = trainer.Evaluate(validation, 1, seed);
        trainer.TrainStep();
        float trained = trainer.Evaluate(validation, 1, seed);
        Assert.NotEqual(before, trained);

        trainer.RestoreTrainable(snapshot);
        Assert.Equal(before, trainer.Evaluate(validation, 1, seed));
        foreach (var (name, p) in trainer.Optimizer.Parameters)
        {
            Assert.True(p.ToArray().AsSpan().SequenceEqual(snapshot[name]), $"{name} not restored (seed {seed})");
        }

        // The frozen layers were never touched, by the step or the restore.
        Assert.All(model.Unet.SpatialParameters().Zip(spatialBefore), pair => Assert.True(pair.First.Parameter.ToArray().AsSpan().SequenceEqual(pair.Second)));

        // A snapshot of other parameters is refused before anything is written.
        var partial = snapshot.Skip(1).ToDictionary();
        string missing = snapshot.Keys.First();
        var ex = Assert.Throws<ArgumentException>(() => trainer.RestoreTrainable(partial));
        Assert.Contains(missing, ex.Message);
    }

    [Fact]
    public void Loop_correction_takes_serials_exact_steps_and_its_mean_mode_keeps_the_bias_as_optimizer_state()
    {
        // Ten training steps and their exact passes take minutes on the simulator; the CUDA path adds nothing
        // here that the op tests do not cover (one elementwise op), and scripts/gpu-run.sh runs it on a GPU.
        Assert.SkipWhen(fixture.Simulated, "minutes of training steps on the CUDA simulator; run on a real GPU by scripts/gpu-run.sh");
        int seed = Seeds.One;
        var data = Clips(seed);
        (float[] Losses, Dictionary<string, float[]> Weights, long OptimizerBytes, long Left) Run(Topology topology, int correctEvery, int steps)
        {
            using var model = TextToVideo.Create(B, Micro, topology, seed);
            long before = B.Memory.Snapshot().CurrentBytes;
            var trainer = new Trainer(model, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f, LoopCorrectionEvery = correctEvery, LoopCorrectionMode = LoopCorrectionMode.Mean });
            var losses = Enumerable.Range(0, steps).Select(_ => trainer.TrainStep().Loss).ToArray();
            long optimizerBytes = B.Memory.Snapshot().Current[MemoryCategory.OptimizerState];
            trainer.Dispose();
            return (losses, model.Unet.StateDict(), optimizerBytes, B.Memory.Snapshot().CurrentBytes - before);
        }

        // Correcting every step is taking serial's exact step every step: the loop then trains as serial does.
        var serial = Run(Topology.Serial, 0, 2);
        var exact = Run(Topology.Parallel, 1, 2);
        Assert.Equal(serial.Losses, exact.Losses);
        bool Same(Dictionary<string, float[]> a, Dictionary<string, float[]> b) => a.All(kv => kv.Value.AsSpan().SequenceEqual(b[kv.Key]));
        Assert.True(Same(serial.Weights, exact.Weights), $"the exact loop steps are not serial's (seed {seed})");

        // The running bias is one more gradient-sized buffer, accounted as optimizer state (Adam keeps two).
        var plainLoop = Run(Topology.Parallel, 0, 2);
        long trainableBytes = 4 * plainLoop.Weights.Where(kv => kv.Key.Contains("temp_", StringComparison.Ordinal)).Sum(kv => (long)kv.Value.Length);
        Assert.Equal(2 * trainableBytes, plainLoop.OptimizerBytes);
        Assert.Equal(3 * trainableBytes, exact.OptimizerBytes);
        Assert.Equal(plainLoop.Left, exact.Left);  // the bias buffers go back with the trainer (the model's own caches stay)

        // Every other step corrected: step 1 is serial's exact step, step 2 the loop's corrected one.
        var corrected = Run(Topology.Parallel, 2, 2);
        Assert.Equal(serial.Losses, corrected.Losses);
        Assert.False(Same(serial.Weights, corrected.Weights), "the corrected loop step equals serial's");
        Assert.All(corrected.Weights.Values, v => Assert.All(v, x => Assert.True(float.IsFinite(x))));

        // The bias after the first exact step is the loop's gradient minus serial's on that batch, each
        // computed here on its own: the loop's by a plain backward, serial's by a serial model.
        using var loopModel = TextToVideo.Create(B, Micro, Topology.Parallel, seed);
        using var serialModel = TextToVideo.Create(B, Micro, Topology.Serial, seed);
        using var correcting = new Trainer(loopModel, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LoopCorrectionEvery = 2, LoopCorrectionMode = LoopCorrectionMode.Mean });
        using var serialTrainer = new Trainer(serialModel, data, Stage.TextToVideo, new TrainOptions { Seed = seed });
        var batch = correcting.MakeBatch(data, 1, seed, correcting.Options.CaptionDropout);
        correcting.Backprop(batch);
        serialTrainer.Backprop(batch);
        var expected = correcting.Optimizer.Parameters.ToDictionary(
            np => np.Name, np => np.Parameter.Grad!.ToArray().Zip(serialTrainer.Optimizer.Parameters.Single(s => s.Name == np.Name).Parameter.Grad!.ToArray(), (l, e) => l - e).ToArray());
        correcting.Optimizer.ZeroGrad();
        serialTrainer.Optimizer.ZeroGrad();
        correcting.TrainStep();
        Assert.Equal(expected.Count, correcting.LoopBias.Count);
        foreach (var (name, p) in correcting.Optimizer.Parameters)
        {
            var got = correcting.LoopBias[p].ToArray().Select(v => v * correcting.LoopBiasScale).ToArray();
            float scale = expected[name].Max(MathF.Abs) + 1e-12f;
            for (int i = 0; i < got.Length; i++)
            {
                Assert.True(MathF.Abs(got[i] - expected[name][i]) <= 1e-5f * scale, $"{name}[{i}]: bias {got[i]}, loop - serial {expected[name][i]} (seed {seed})");
            }
        }

        // Serial has nothing to correct: the option leaves it alone.
        Assert.True(Same(serial.Weights, Run(Topology.Serial, 2, 2).Weights), "the option changed serial's training");
    }

    [Theory]
    [InlineData(65536)]  // the default: every micro tensor fitted whole
    [InlineData(7)]      // every tensor of more than 7 elements fitted on every k-th element, k = ceil(n / 7)
    public void Scaled_loop_correction_fits_each_tensors_coefficient_on_serials_gradient(int samples)
    {
        Assert.SkipWhen(fixture.Simulated, "minutes of training passes on the CUDA simulator; run on a real GPU by scripts/gpu-run.sh");
        int seed = Seeds.One;
        const float momentum = 0.8f;
        var data = Clips(seed);
        using var loopModel = TextToVideo.Create(B, Micro, Topology.Parallel, seed);
        using var serialModel = TextToVideo.Create(B, Micro, Topology.Serial, seed);
        using var serialTrainer = new Trainer(serialModel, data, Stage.TextToVideo, new TrainOptions { Seed = seed });
        long optimizerBefore = B.Memory.Snapshot().Current.GetValueOrDefault(MemoryCategory.OptimizerState);
        using var correcting = new Trainer(loopModel, data, Stage.TextToVideo,
            new TrainOptions { Seed = seed, LearningRate = 1e-2f, LoopCorrectionEvery = 2, LoopCorrectionMode = LoopCorrectionMode.Scale, LoopCorrectionMomentum = momentum, LoopScaleSamples = samples });
        Dictionary<string, float[]> Grads(Trainer t) => t.Optimizer.Parameters.ToDictionary(np => np.Name, np => np.Parameter.Grad!.ToArray());

        // The dot products over the fitted elements: every k-th from the first, the same in both gradients.
        double Dot(float[] a, float[] b)
        {
            int stride = (a.Length + samples - 1) / samples;
            double sum = 0;
            for (int i = 0; i < a.Length; i += stride)
            {
                sum += (double)a[i] * b[i];
            }

            return sum;
        }

        static double Ratio(double cov, double var) => var > 0 ? Math.Clamp(cov / var, 0, 1) : 0;  // a tensor with no gradient yet: 0

        // Both gradients of step k's batch at the loop model's current weights, each computed here on its own:
        // the loop's by a plain backward, serial's by a serial model holding the same weights.
        (Dictionary<string, float[]> Loop, Dictionary<string, float[]> Exact) Pair(int step)
        {
            var batch = correcting.MakeBatch(data, step, seed, correcting.Options.CaptionDropout);
            serialModel.Unet.LoadStateDict(loopModel.Unet.StateDict());
            correcting.Backprop(batch);
            serialTrainer.Backprop(batch);
            var pair = (Grads(correcting), Grads(serialTrainer));
            correcting.Optimizer.ZeroGrad();
            serialTrainer.Optimizer.ZeroGrad();
            return pair;
        }

        // Steps 1 and 3 are exact; each folds <exact, loop> and <loop, loop> into running means (from zero, so
        // their ratio needs no debiasing), and the coefficient is the ratio, clamped to [0, 1].
        var (loop1, exact1) = Pair(1);
        correcting.TrainStep();
        var coefficients = new Dictionary<string, float>();
        foreach (var (name, p) in correcting.Optimizer.Parameters)
        {
            double expected = Ratio(Dot(exact1[name], loop1[name]), Dot(loop1[name], loop1[name]));
            float got = correcting.LoopScales[p].Coefficient;
            Assert.True(Math.Abs(got - expected) <= 1e-4 * Math.Max(1, expected), $"{name}: coefficient {got}, expected {expected} after one fold (seed {seed})");
            coefficients[name] = got;
        }

        // The fit must be exercised, not just its clamp: some coefficient strictly inside (0, 1), after this fold or
        // the next (after one fold alone every tensor sits at a clamp for about one seed in 40).
        int interior = coefficients.Values.Count(c => c is > 0.02f and < 0.98f);
        Assert.True(samples > loop1.Values.Max(g => g.Length) || loop1.Values.Any(g => g.Length > samples && g.Any(v => v != 0)), "no tensor with a gradient was sampled");
        Assert.Contains(coefficients.Values, c => c > 0.98f);                 // the last temporal layer's loop gradient is exact

        // Step 2 is the loop's, scaled per tensor by those coefficients.
        var batch2 = correcting.MakeBatch(data, 2, seed, correcting.Options.CaptionDropout);
        correcting.Backprop(batch2);
        var loop2 = Grads(correcting);
        correcting.CorrectLoopGradients();
        foreach (var (name, g) in Grads(correcting))
        {
            float c = coefficients[name];
            float scale = loop2[name].Max(MathF.Abs) + 1e-12f;
            Assert.All(g.Zip(loop2[name]), pair => Assert.True(MathF.Abs(pair.First - c * pair.Second) <= 1e-6f * scale, $"{name}: corrected {pair.First}, expected {c * pair.Second} (seed {seed})"));
        }

        correcting.Optimizer.ZeroGrad();
        correcting.TrainStep();  // step 2 for real, so step 3 starts from the corrected weights
        var (loop3, exact3) = Pair(3);
        correcting.TrainStep();
        foreach (var (name, p) in correcting.Optimizer.Parameters)
        {
            double cov = momentum * (1 - momentum) * Dot(exact1[name], loop1[name]) + (1 - momentum) * Dot(exact3[name], loop3[name]);
            double var = momentum * (1 - momentum) * Dot(loop1[name], loop1[name]) + (1 - momentum) * Dot(loop3[name], loop3[name]);
            double expected = Ratio(cov, var);
            float got = correcting.LoopScales[p].Coefficient;
            Assert.True(Math.Abs(got - expected) <= 1e-4 * Math.Max(1, expected), $"{name}: coefficient {got}, expected {expected} after two folds (seed {seed})");
            interior += got is > 0.02f and < 0.98f ? 1 : 0;
        }

        Assert.True(interior > 0, $"every fitted coefficient sat at a clamp (0 or 1) in both folds (seed {seed})");

        // The correction keeps no buffer: the optimizer state is Adam's two moments, as without it.
        Assert.Equal(2 * 4 * correcting.TrainableParameters, B.Memory.Snapshot().Current[MemoryCategory.OptimizerState] - optimizerBefore);
    }

    [Fact]
    public void Resuming_from_a_checkpoint_continues_exactly()
    {
        int seed = Seeds.One;
        using var folder = new TempFolder();
        var data = Clips(seed);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-3f };

        float[] Straight(int steps, out Dictionary<string, float[]> weights)
        {
            using var m = TextToVideo.Create(B, Micro, Topology.Parallel, seed);
            using var t = new Trainer(m, data, Stage.TextToVideo, options);
            var losses = Enumerable.Range(0, steps).Select(_ => t.TrainStep().Loss).ToArray();
            weights = m.Unet.StateDict();
            return losses;
        }

        var all = Straight(4, out var expected);

        string path = folder.File("half.safetensors");
        float[] firstHalf;
        using (var m = TextToVideo.Create(B, Micro, Topology.Parallel, seed))
        using (var t = new Trainer(m, data, Stage.TextToVideo, options))
        {
            firstHalf = [t.TrainStep().Loss, t.TrainStep().Loss];
            t.Save(path);
        }

        var ckpt = Checkpoint.Load(path);
        Assert.Equal(2, ckpt.Step);
        Assert.Equal(Topology.Parallel, ckpt.Topology);
        using var resumed = TextToVideo.Load(B, ckpt, Topology.Parallel, seed);
        using var trainer = new Trainer(resumed, data, Stage.TextToVideo, options);
        trainer.Resume(ckpt);
        var secondHalf = new[] { trainer.TrainStep().Loss, trainer.TrainStep().Loss };
        Assert.Equal(all, firstHalf.Concat(secondHalf).ToArray());
        var got = resumed.Unet.StateDict();
        foreach (var (name, values) in expected)
        {
            Assert.True(values.AsSpan().SequenceEqual(got[name]), $"{name} differs after resume");
        }
    }

    [Theory]
    [InlineData(Topology.Serial, Topology.Parallel)]
    [InlineData(Topology.Parallel, Topology.Serial)]
    public void A_text_to_video_checkpoint_fine_tunes_in_the_other_topology_when_the_bridge_is_the_loop(Topology trainedAs, Topology loadedAs)
    {
        // The loop bridge is serial's model parameter for parameter, so a trained text-to-video model (here two
        // steps, so that the temporal outputs are no longer zero) predicts the same in either topology, to the bit.
        int seed = Seeds.One;
        using var folder = new TempFolder();
        var data = Clips(seed);
        var validation = Clips(seed, Split.Validation);
        string path = folder.File("t2v.safetensors");
        float untrained, trained;
        using (var m = TextToVideo.Create(B, Micro, trainedAs, seed))
        using (var t = new Trainer(m, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f }))
        {
            untrained = t.Evaluate(validation, 1, seed);
            t.TrainStep();
            t.TrainStep();
            trained = t.Evaluate(validation, 1, seed);
            t.Save(path);
        }

        Assert.NotEqual(untrained, trained);
        var ckpt = Checkpoint.Load(path);
        Assert.Equal(trainedAs, ckpt.Topology);
        Assert.True(TextToVideo.SharesSerialModel(ckpt, loadedAs));
        using var other = TextToVideo.Load(B, ckpt, loadedAs, seed);
        Assert.Equal(loadedAs, other.Unet.Topology);
        Assert.Equal("loop", other.Unet.Config.Bridge);
        var weights = other.Unet.StateDict();
        Assert.Equal(ckpt.Unet.Keys.Order(), weights.Keys.Order());
        foreach (var (name, values) in ckpt.Unet)
        {
            Assert.True(values.AsSpan().SequenceEqual(weights[name]), $"{name} differs after loading as {loadedAs}");
        }

        using var trainer = new Trainer(other, data, Stage.TextToVideo, new TrainOptions { Seed = seed, LearningRate = 1e-2f });
        Assert.Equal(trained, trainer.Evaluate(validation, 1, seed));
        Assert.True(float.IsFinite(trainer.TrainStep().Loss));
    }

    [Theory]
    [InlineData("skip")]
    [InlineData("additive")]
    public void A_text_to_video_checkpoint_does_not_load_into_a_topology_with_other_parameters(string bridge)
    {
        int seed = Seeds.One;
        using var folder = new TempFolder();
        string serialPath = folder.File("serial.safetensors"), ringPath = folder.File("ring.safetensors");
        using (var m = TextToVideo.Create(B, Micro, Topology.Serial, seed))
        using (var t = new Trainer(m, Clips(seed), Stage.TextToVideo, new TrainOptions { Seed = seed }))
        {
            t.Save(serialPath);
        }

        using (var m = TextToVideo.Create(B, Micro with { Bridge = bridge }, Topology.Parallel, seed))
        using (var t = new Trainer(m, Clips(seed), Stage.TextToVideo, new TrainOptions { Seed = seed }))
        {
            t.Save(ringPath);
        }

        var serial = Checkpoint.Load(serialPath);
        var ring = Checkpoint.Load(ringPath);
        var e = Assert.Throws<InvalidDataException>(() => TextToVideo.Load(B, serial, Topology.Parallel, seed, bridge));
        Assert.Contains($"cannot be loaded as Parallel with the {bridge} bridge", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<InvalidDataException>(() => TextToVideo.Load(B, ring, Topology.Serial, seed));
        Assert.Contains($"a Parallel checkpoint with the {bridge} bridge cannot be loaded as Serial", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_loop_corrections_warmup_takes_serials_exact_steps_then_the_loops()
    {
        Assert.SkipWhen(fixture.Simulated, "minutes of training steps on the CUDA simulator; run on a real GPU by scripts/gpu-run.sh");
        int seed = Seeds.One;
        var data = Clips(seed);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-2f, LoopCorrectionEvery = 100, LoopCorrectionWarmup = 3 };
        Assert.Equal(3, TrainOptions.FromJson(options.ToJson()).LoopCorrectionWarmup);
        (float[] Losses, Dictionary<string, float[]> Weights) Run(Topology topology, int steps)
        {
            using var model = TextToVideo.Create(B, Micro, topology, seed);
            using var trainer = new Trainer(model, data, Stage.TextToVideo, topology == Topology.Serial ? new TrainOptions { Seed = seed, LearningRate = 1e-2f } : options);
            var losses = Enumerable.Range(0, steps).Select(_ => trainer.TrainStep().Loss).ToArray();
            return (losses, model.Unet.StateDict());
        }

        bool Same(Dictionary<string, float[]> a, Dictionary<string, float[]> b) => a.All(kv => kv.Value.AsSpan().SequenceEqual(b[kv.Key]));

        // Steps 1 to 3 are serial's exact steps, bit for bit; step 4 is the loop's own (corrected) step.
        var serial3 = Run(Topology.Serial, 3);
        var warm3 = Run(Topology.Parallel, 3);
        Assert.Equal(serial3.Losses, warm3.Losses);
        Assert.True(Same(serial3.Weights, warm3.Weights), $"the warm-up steps are not serial's (seed {seed})");
        var serial4 = Run(Topology.Serial, 4);
        var warm4 = Run(Topology.Parallel, 4);
        Assert.Equal(serial4.Losses, warm4.Losses);  // step 4's loss is taken before its update
        Assert.False(Same(serial4.Weights, warm4.Weights), "step 4 after the warm-up took serial's step");
    }

    [Theory]
    [InlineData(LoopCorrectionMode.Scale)]
    [InlineData(LoopCorrectionMode.Mean)]
    public void Resuming_a_loop_corrected_run_continues_exactly_with_its_options_and_correction(LoopCorrectionMode mode)
    {
        Assert.SkipWhen(fixture.Simulated, "minutes of training steps on the CUDA simulator; run on a real GPU by scripts/gpu-run.sh");
        int seed = Seeds.One;
        using var folder = new TempFolder();
        var data = Clips(seed);
        var options = new TrainOptions
        {
            Seed = seed, LearningRate = 3e-3f, MinSnrGamma = 5f, LoopCorrectionEvery = 2, LoopCorrectionMode = mode,
            LoopCorrectionMomentum = 0.8f, FrozenTemporal = ["mid."],
        };

        // Seven steps straight: exact steps 1, 3, 5, 7; steps 4 and 6 corrected by what steps 1 and 3 (and 5) measured.
        float[] straight;
        Dictionary<string, float[]> expected;
        using (var m = TextToVideo.Create(B, Micro, Topology.Parallel, seed))
        using (var t = new Trainer(m, data, Stage.TextToVideo, options))
        {
            straight = Enumerable.Range(0, 7).Select(_ => t.TrainStep().Loss).ToArray();
            expected = m.Unet.StateDict();
        }

        // Stopped after step 3 (an exact step just folded in), resumed from the checkpoint alone: its recorded options, its correction.
        string path = folder.File("corrected.safetensors");
        using (var m = TextToVideo.Create(B, Micro, Topology.Parallel, seed))
        using (var t = new Trainer(m, data, Stage.TextToVideo, options))
        {
            for (int i = 0; i < 3; i++)
            {
                t.TrainStep();
            }

            t.Save(path);
        }

        var ckpt = Checkpoint.Load(path);
        var recorded = Assert.IsType<TrainOptions>(ckpt.TrainOptions);
        Assert.Equal(options.ToJson(), recorded.ToJson());
        Assert.Equal(["mid."], recorded.FrozenTemporal!);
        var state = Assert.IsType<LoopCorrectionState>(ckpt.LoopCorrection);
        Assert.Equal(mode, state.Mode);
        Assert.Equal(2, state.Folds);
        Assert.NotEmpty(mode == LoopCorrectionMode.Scale ? state.Fits.Keys : state.Bias.Keys);
        Assert.DoesNotContain(state.Fits.Keys.Concat(state.Bias.Keys), n => n.Contains(".mid.", StringComparison.Ordinal));  // frozen: no gradient, nothing measured

        (float[] Losses, Dictionary<string, float[]> Weights) Resume(Checkpoint from)
        {
            using var m = TextToVideo.Load(B, from, Topology.Parallel, from.Seed);
            using var t = new Trainer(m, data, Stage.TextToVideo, from.TrainOptions!);
            t.Resume(from);
            var losses = Enumerable.Range(0, 4).Select(_ => t.TrainStep().Loss).ToArray();
            return (losses, m.Unet.StateDict());
        }

        var resumed = Resume(ckpt);
        Assert.Equal(straight[3..], resumed.Losses);
        foreach (var (name, values) in expected)
        {
            Assert.True(values.AsSpan().SequenceEqual(resumed.Weights[name]), $"{name} differs after resume (seed {seed}, {mode})");
        }

        // What the correction measured is what makes it exact: resumed without it, step 4 goes uncorrected and the weights part.
        var forgetful = new Checkpoint
        {
            Config = ckpt.Config, Topology = ckpt.Topology, Step = ckpt.Step, Seed = ckpt.Seed, Vocabulary = ckpt.Vocabulary,
            CodecScales = ckpt.CodecScales, CodecShifts = ckpt.CodecShifts, Unet = ckpt.Unet, Text = ckpt.Text,
            Optimizer = ckpt.Optimizer, OptimizerSteps = ckpt.OptimizerSteps, TrainOptions = ckpt.TrainOptions, LoopCorrection = null,
        };
        var without = Resume(forgetful);
        Assert.Contains(expected, kv => !kv.Value.AsSpan().SequenceEqual(without.Weights[kv.Key]));
    }

    [Fact]
    public void A_text_to_image_checkpoint_loads_into_both_topologies_and_a_video_one_into_its_own_or_the_loop()
    {
        int seed = Seeds.One;
        using var folder = new TempFolder();
        string t2iPath = folder.File("t2i.safetensors");
        // The stage-1 run's frame noise setting is not a stage-2 one: video models get the default.
        using (var t2i = TextToVideo.Create(B, Micro with { FrameNoiseCorrelation = 0.7f }, Topology.Spatial, seed))
        {
            t2i.Save(t2iPath, step: 7, seed);
        }

        var ckpt = Checkpoint.Load(t2iPath);
        Assert.Equal(7, ckpt.Step);
        Assert.Equal(0.7f, ckpt.Config.FrameNoiseCorrelation);
        using (var serial = TextToVideo.Load(B, ckpt, Topology.Serial, seed))
        using (var parallel = TextToVideo.Load(B, ckpt, Topology.Parallel, seed))
        {
            Assert.Equal(ModelConfig.DefaultFrameNoiseCorrelation, serial.Config.FrameNoiseCorrelation);
            Assert.Equal(ModelConfig.DefaultFrameNoiseCorrelation, parallel.Config.FrameNoiseCorrelation);
            foreach (var (name, values) in ckpt.Unet)
            {
                Assert.Equal(values, serial.Unet.StateDict()[name]);
                Assert.Equal(values, parallel.Unet.StateDict()[name]);
            }

            string serialPath = folder.File("serial.safetensors");
            using (var trained = TextToVideo.Create(B, Micro with { FrameNoiseCorrelation = 0.25f }, Topology.Serial, seed))
            {
                trained.Save(serialPath, 1, seed);
            }

            using (var resumed = TextToVideo.Load(B, Checkpoint.Load(serialPath), Topology.Serial, seed))
            {
                Assert.Equal(0.25f, resumed.Config.FrameNoiseCorrelation);
            }

            Assert.Throws<InvalidDataException>(() => TextToVideo.Load(B, Checkpoint.Load(serialPath), Topology.Serial, seed, frameNoiseCorrelation: 0.9f));
            using (var chosen = TextToVideo.Load(B, ckpt, Topology.Serial, seed, frameNoiseCorrelation: 0.3f))
            {
                Assert.Equal(0.3f, chosen.Config.FrameNoiseCorrelation);
            }

            // Into the parallel topology only with the loop bridge, serial's model (the fine-tuning tests below).
            using (var loop = TextToVideo.Load(B, Checkpoint.Load(serialPath), Topology.Parallel, seed))
            {
                Assert.Equal("loop", loop.Config.Bridge);
            }

            var e = Assert.Throws<InvalidDataException>(() => TextToVideo.Load(B, Checkpoint.Load(serialPath), Topology.Parallel, seed, bridge: "additive"));
            Assert.Contains("Serial", e.Message);
        }
    }

    [Fact]
    public void Damaged_checkpoints_are_rejected_with_the_file_named()
    {
        using var folder = new TempFolder();
        string path = folder.File("bad.safetensors");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Throws<FileNotFoundException>(() => Checkpoint.Load(folder.File("missing.safetensors")));

        // Truncating a good checkpoint is caught too.
        string good = folder.File("good.safetensors");
        using (var m = TextToVideo.Create(B, Micro, Topology.Spatial, 1))
        {
            m.Save(good, 0, 1);
        }

        var bytes = File.ReadAllBytes(good);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        Assert.Contains(path, Assert.Throws<InvalidDataException>(() => Checkpoint.Load(path)).Message);

        // So are a trainer's entries that do not parse: its options, its loop correction.
        var (tensors, meta) = Mobius.Engine.IO.SafeTensors.Read(good);
        foreach (var (key, value) in new[] { ("train_options", "{\"learning_rate\": "), ("train_options", "{\"loop_correction_mode\": \"median\"}"),
                     ("loop_correction", "{\"mode\": \"scale\", \"folds\": 1, \"fits\": {\"unet.a\": [1.0]}}") })
        {
            Mobius.Engine.IO.SafeTensors.Write(path, tensors, new Dictionary<string, string>(meta) { [key] = value });
            var damaged = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(path));
            Assert.Contains(path, damaged.Message);
            Assert.Contains("damaged metadata", damaged.Message);
        }

        // A caller's metadata cannot overwrite the checkpoint's own.
        using (var m = TextToVideo.Create(B, Micro, Topology.Spatial, 1))
        {
            Assert.Throws<ArgumentException>(() => m.Save(path, 0, 1, extra: new Dictionary<string, string> { ["train_options"] = "{}" }));
        }
    }

    [Fact]
    public void Sampling_gives_clips_in_range_and_is_repeatable()
    {
        using var m = TextToVideo.Create(B, Micro, Topology.Parallel, Seeds.One);
        var prompt = Clips(1).Get(0).Caption;
        var a = m.Generate([prompt], steps: 3, seed: 5);
        var b = m.Generate([prompt], steps: 3, seed: 5);
        Assert.Equal(Micro.Frames * 3 * Micro.Height * Micro.Width, a.Length);
        Assert.All(a, v => Assert.InRange(v, -1f, 1f));
        Assert.Equal(a, b);
        Assert.Throws<UnknownWordsException>(() => m.Generate(["a purple zebra"], steps: 1));
    }

    [Fact]
    public void Sampling_starts_from_frame_correlated_noise_0_9_or_the_models_own_where_higher()
    {
        using (var independent = TextToVideo.Create(B, Micro with { FrameNoiseCorrelation = 0f }, Topology.Serial, Seeds.One))
        using (var correlated = TextToVideo.Create(B, Micro with { FrameNoiseCorrelation = 0.95f }, Topology.Parallel, Seeds.One))
        using (var still = TextToVideo.Create(B, Micro, Topology.Spatial, Seeds.One))
        {
            Assert.Equal(TextToVideo.DefaultSampleFrameNoise, independent.SampleFrameNoise());
            Assert.Equal(0.95f, correlated.SampleFrameNoise());
            Assert.Equal(0.3f, correlated.SampleFrameNoise(0.3f));
            Assert.Equal(0f, still.SampleFrameNoise(0.5f));
            Assert.Throws<ArgumentOutOfRangeException>(() => independent.SampleFrameNoise(1f));
            Assert.Throws<ArgumentOutOfRangeException>(() => independent.Generate(["x"], steps: 1, frameNoise: -0.1f));
        }

        // Generate starts from that noise: at initialisation the temporal layers are the identity, so each frame
        // is denoised on its own and frames that start alike end alike. Nearly shared starting noise (0.99)
        // must give frames far closer to each other than independent noise does.
        using var m = TextToVideo.Create(B, Micro with { FrameNoiseCorrelation = 0f }, Topology.Serial, Seeds.One);
        var prompt = Clips(1).Get(0).Caption;
        int frameSize = 3 * Micro.Height * Micro.Width;
        double FrameSpread(float rho)
        {
            var pixels = m.Generate([prompt], steps: 2, seed: Seeds.One, frameNoise: rho);
            double sum = 0;
            for (int f = 1; f < Micro.Frames; f++)
            {
                for (int i = 0; i < frameSize; i++)
                {
                    sum += Math.Abs(pixels[f * frameSize + i] - pixels[(f - 1) * frameSize + i]);
                }
            }

            return sum / ((Micro.Frames - 1) * frameSize);
        }

        double apart = FrameSpread(0f), alike = FrameSpread(0.99f);
        Assert.True(apart > 0, "independent starting noise gave identical frames");
        Assert.True(alike < 0.5 * apart, $"frames from noise correlated 0.99 differ by {alike:0.0000} on average, from independent noise by {apart:0.0000}");
    }
}

public sealed class CpuTrainingTests(CpuFixture f) : TrainingTests(f), IClassFixture<CpuFixture>;
public sealed class CudaTrainingTests(CudaFixture f) : TrainingTests(f), IClassFixture<CudaFixture>;
