using Mobius.Data;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;
using Xunit;

namespace Mobius.Tests.Model;

/// <summary>The serial-vs-parallel comparison as a library call (the CLI's tests run it end to end).</summary>
public sealed class ComparisonTests
{
    private static ComparisonOptions Options(int steps, CancellationToken stop = default) => new()
    {
        Config = ModelConfig.Get("micro"),
        Steps = steps,
        Seed = Seeds.One,
        SamplePrompts = 0,
        ValidateEvery = 2,
        ValidationBatches = 1,
        Train = new TrainOptions { LearningRate = 3e-3f },
        BackendFactory = () => new CpuBackend(),
        StopTraining = stop,
    };

    [Fact]
    public void Stopping_training_early_finishes_the_comparison_over_the_steps_taken()
    {
        // Asked for 7 steps, stopped while the pair of step 3 trains: both topologies finish step 3, then the
        // comparison validates and reports as a 3-step run would.
        using var stop = new CancellationTokenSource();
        var stopped = Comparison.Run(Options(7, stop.Token), new InlineProgress<CompareProgress>(p =>
        {
            if (p is { Phase: "train", Topology: Topology.Serial, Done: 3 })
            {
                stop.Cancel();
            }
        }));
        var full = Comparison.Run(Options(3, TestContext.Current.CancellationToken));

        Assert.Equal(3, stopped.Steps);
        Assert.Equal(7, stopped.StepsRequested);
        Assert.Equal(3, full.StepsRequested);
        foreach (var (a, b) in new[] { (stopped.Serial, full.Serial), (stopped.Parallel, full.Parallel) })
        {
            Assert.Equal(3, a.Losses.Count);
            Assert.Equal(b.Losses, a.Losses);
            Assert.Equal([0, 2, 3], a.ValidationCurve.Select(v => v.Step));
            Assert.Equal(b.ValidationLoss, a.ValidationLoss);
        }

        Assert.Contains("\"steps_requested\": 7", stopped.ToJson());
    }

    [Fact]
    public void Data_parallel_ranks_compare_as_accumulating_their_batches_each_topology_on_ranks_of_its_own()
    {
        // Two ranks per topology take a step's two batches at once and average their gradients: the run
        // accumulating the same two batches on one model. Each topology has a rank-1 backend of its own and
        // collectives over its own two backends, disposed with them.
        var token = TestContext.Current.CancellationToken;
        var rankBackends = new List<(int Rank, CpuBackend Backend)>();
        var collectives = new List<TrackedCollectives>();
        var ranked = Comparison.Run(Options(3, token) with
        {
            Train = new TrainOptions { LearningRate = 3e-3f, Ranks = 2 },
            RankBackendFactory = r =>
            {
                var b = new CpuBackend();
                rankBackends.Add((r, b));
                return b;
            },
            CollectivesFactory = backends =>
            {
                Assert.Equal(2, backends.Count);
                Assert.Same(rankBackends[^1].Backend, backends[1]);
                collectives.Add(new TrackedCollectives());
                return collectives[^1];
            },
        });
        var accumulated = Comparison.Run(Options(3, token) with { Train = new TrainOptions { LearningRate = 3e-3f, Accumulate = 2 } });

        Assert.Equal([1, 1], rankBackends.Select(r => r.Rank));
        Assert.Equal(2, collectives.Count);
        Assert.All(collectives, c => Assert.True(c is { Disposed: true, Reductions: 3 }, $"{c.Reductions} reductions, disposed {c.Disposed}"));
        Assert.Equal((2, 1), (ranked.Ranks, ranked.Accumulate));
        Assert.Contains("\"ranks\": 2", ranked.ToJson());
        foreach (var (r, a, name) in new[] { (ranked.Serial, accumulated.Serial, "serial"), (ranked.Parallel, accumulated.Parallel, "parallel") })
        {
            Close.All(r.Losses.Select(l => (float)l).ToArray(), a.Losses.Select(l => (float)l).ToArray(), 1e-7, 1e-4, $"{name}: two ranks' step losses against two accumulated batches");
            Close.All(r.ValidationCurve.Select(v => (float)v.Loss).ToArray(), a.ValidationCurve.Select(v => (float)v.Loss).ToArray(), 1e-7, 1e-4, $"{name}: validation losses");
            Assert.NotEqual(r.ValidationCurve[0].Loss, r.ValidationLoss);  // it trained
        }

        // A rank's memory is one batch's activations where accumulation also holds the gradients between its batches.
        Assert.True(ranked.Parallel.PeakBytes <= accumulated.Parallel.PeakBytes, $"{ranked.Parallel.PeakBytes} > {accumulated.Parallel.PeakBytes}");
        // The planned operating points are one rank's: at this run's policy they are what rank 0 measured.
        var none = Assert.Single(ranked.OperatingPoints!, p => p.Recompute == "none");
        Assert.Equal((ranked.Serial.PeakBytes, ranked.Parallel.PeakBytes), (none.Serial.PeakBytes, none.Parallel.PeakBytes));
        Assert.Equal((ranked.Serial.SavedActivationBytes, ranked.Parallel.SavedActivationBytes), (none.Serial.SavedActivationBytes, none.Parallel.SavedActivationBytes));
    }

    /// <summary>Host collectives that count their all-reduces and remember being disposed.</summary>
    private sealed class TrackedCollectives : Mobius.Engine.Distributed.ICollectives, IDisposable
    {
        private readonly Mobius.Engine.Distributed.HostCollectives _host = new();

        public string Name => "tracked";

        public int Reductions { get; private set; }

        public bool Disposed { get; private set; }

        public void AllReduceMean(IReadOnlyList<IReadOnlyList<Mobius.Engine.Tensor>> byRank)
        {
            Reductions++;
            _host.AllReduceMean(byRank);
        }

        public void Broadcast(IReadOnlyList<IReadOnlyList<Mobius.Engine.Tensor>> byRank, int root = 0) => _host.Broadcast(byRank, root);

        public void Dispose() => Disposed = true;
    }

    [Fact]
    public void Both_topologies_fine_tune_a_serial_text_to_video_checkpoint_from_the_same_model()
    {
        // A text-to-video model trained serially at frame noise 0: the comparison fine-tunes it in both
        // topologies (the loop is serial's model), keeping the checkpoint's frame noise.
        using var folder = new Mobius.Tests.Data.TempFolder();
        string path = folder.File("serial-t2v.safetensors");
        var config = ModelConfig.Get("micro") with { FrameNoiseCorrelation = 0 };
        using (var backend = new CpuBackend())
        using (var m = TextToVideo.Create(backend, config, Topology.Serial, Seeds.One))
        using (var t = new Trainer(m, Comparison.Data(config, Seeds.One, Split.Train), Stage.TextToVideo, new TrainOptions { Seed = Seeds.One, LearningRate = 1e-2f }))
        {
            t.TrainStep();
            t.TrainStep();
            t.Save(path);
        }

        var fromT2v = Comparison.Run(Options(2, TestContext.Current.CancellationToken) with { Checkpoint = path });
        var fromT2i = Comparison.Run(Options(2, TestContext.Current.CancellationToken) with { Checkpoint = null, FrameNoiseCorrelation = 0 });

        Assert.Equal(new StartPoint("serial-t2v.safetensors", "serial", 2), fromT2v.Start);
        Assert.Null(fromT2i.Start);
        Assert.Contains("\"start\": {", fromT2v.ToJson());
        Assert.Equal(0, fromT2v.FrameNoiseCorrelation);
        Assert.Equal(fromT2v.Serial.InitialValidationLoss, fromT2v.Parallel.InitialValidationLoss);
        Assert.NotEqual(fromT2i.Serial.InitialValidationLoss, fromT2v.Serial.InitialValidationLoss);
        Assert.Equal(fromT2v.Serial.Losses[0], fromT2v.Parallel.Losses[0]);  // same model, same first batch
        Assert.NotEqual(fromT2v.Serial.Losses[1], fromT2v.Parallel.Losses[1]);  // then each topology's own update
    }

    [Fact]
    public void The_planned_operating_point_of_the_run_is_what_the_run_measured()
    {
        // Recomputing the temporal layers, so the run's policy is not the first point: a mix-up of points shows.
        var options = Options(2, TestContext.Current.CancellationToken) with { Train = new TrainOptions { LearningRate = 3e-3f, RecomputeTemporal = true } };
        var r = Comparison.Run(options);

        Assert.NotNull(r.OperatingPoints);
        Assert.Equal(["none", "temporal", "spatial", "spatial+temporal"], r.OperatingPoints.Select(p => p.Recompute));
        var run = Assert.Single(r.OperatingPoints, p => p.Recompute == "temporal");
        Assert.Equal(r.Serial.PeakBytes, run.Serial.PeakBytes);
        Assert.Equal(r.Serial.SavedActivationBytes, run.Serial.SavedActivationBytes);
        Assert.Equal(r.Parallel.PeakBytes, run.Parallel.PeakBytes);
        Assert.Equal(r.Parallel.SavedActivationBytes, run.Parallel.SavedActivationBytes);
        Assert.Equal(r.Ratio.PeakBytes, run.Ratio.PeakBytes, 12);
        Assert.Equal(r.Ratio.SavedActivationBytes, run.Ratio.SavedActivationBytes, 12);
        Assert.Contains("\"operating_points\"", r.ToJson());
        Assert.Null(r.Frontier);  // not asked for
    }

    [Fact]
    public void A_comparison_stopped_early_skips_the_frontier_it_asked_for()
    {
        using var stop = new CancellationTokenSource();
        var options = Options(3, stop.Token) with { FrontierSteps = 1, WarmupSteps = 0 };
        var stopped = Comparison.Run(options, new InlineProgress<CompareProgress>(p =>
        {
            if (p is { Phase: "train", Topology: Topology.Serial, Done: 1 })
            {
                stop.Cancel();
            }
        }));
        Assert.Equal(1, stopped.Steps);
        Assert.Null(stopped.Frontier);

        var phases = new List<CompareProgress>();
        var full = Comparison.Run(Options(1, TestContext.Current.CancellationToken) with { FrontierSteps = 1, WarmupSteps = 0 }, new InlineProgress<CompareProgress>(phases.Add));
        Assert.NotNull(full.Frontier);
        Assert.Equal(8, full.Frontier.Count);
        Assert.Equal((1, 1), (phases[^1].Done, phases[^1].Total));  // the frontier's one round, reported last
        Assert.Equal("frontier", phases[^1].Phase);
    }

    [Fact]
    public void The_quality_differences_pair_the_clips_and_prompts_of_the_reported_validation_and_samples()
    {
        // Early stopping at a rate that overshoots: the kept weights may be any validation's, and the
        // clip-by-clip losses must be that validation's, whichever it is.
        var options = Options(4, TestContext.Current.CancellationToken) with
        {
            KeepBest = true, ValidationBatches = 2, SamplePrompts = 3, SampleSteps = 2,
            Train = new TrainOptions { LearningRate = 3e-2f },
        };
        var r = Comparison.Run(options);

        int clips = 2 * ModelConfig.Get("micro").Batch;
        foreach (var t in new[] { r.Serial, r.Parallel })
        {
            Assert.Equal(clips, t.ValidationClipLosses.Count);
            Assert.Equal(t.ValidationLoss, t.ValidationClipLosses.Average(), 1e-6);  // equal clips: the batch mean is the mean of clips
            Assert.Equal(3, t.SampleScores.Count);
            Assert.Equal(3, t.SampleMovement.Count);
            Assert.Equal(3, t.SampleConsistency.Count);
        }

        var v = Assert.IsType<PairedDifference>(r.Difference.ValidationLoss);
        Assert.Equal(clips, v.Pairs);
        Assert.Equal(r.Parallel.ValidationLoss - r.Serial.ValidationLoss, v.Mean, 1e-6);
        Assert.InRange(v.Mean, v.Low, v.High);

        var m = Assert.IsType<PairedDifference>(r.Difference.MotionScore);
        Assert.Equal(3, m.Pairs);
        Assert.Equal(r.Parallel.MotionScore!.Value - r.Serial.MotionScore!.Value, m.Mean, 1e-9);
        Assert.Equal(r.Parallel.MotionMatch!.Value - r.Serial.MotionMatch!.Value, r.Difference.MotionMatch!.Mean, 1e-9);
        Assert.Equal(r.Parallel.Consistency!.Value - r.Serial.Consistency!.Value, r.Difference.Consistency!.Mean, 1e-9);
        Assert.Contains("\"difference\": {", r.ToJson());

        // Training time to the parallel topology's final (here: kept) validation loss, off the same run's curves.
        var ttl = r.TimeToParallelLoss;
        Assert.Equal(r.Parallel.ValidationLoss, ttl.Loss);
        Assert.Equal(r.Parallel.StepMs.Take(r.Parallel.WeightsStep).Sum(), ttl.ParallelMs, 1e-9);
        var firstReached = r.Serial.ValidationCurve.FirstOrDefault(p => p.Step > 0 && p.Loss <= ttl.Loss);
        Assert.Equal(ttl.Loss < r.Parallel.InitialValidationLoss ? firstReached?.Step : null, ttl.SerialStep);
        Assert.Contains("\"time_to_parallel_loss\": {", r.ToJson());
        Assert.Contains("\"validation_clip_losses\": [", r.ToJson());
    }

    /// <summary>
    /// Writes <paramref name="count"/> generated micro clips as a GIF folder; the held-out ones (the 10th, 20th, ...)
    /// get captions that name no motion when <paramref name="motionlessHeldOut"/>.
    /// </summary>
    private static string GifFolder(Mobius.Tests.Data.TempFolder dir, int count, bool motionlessHeldOut)
    {
        var config = ModelConfig.Get("micro");
        var emoji = new EmojiClips(new EmojiClipsOptions { Seed = Seeds.One, Count = count, Frames = config.Frames, Height = config.Height, Width = config.Width });
        var clips = Enumerable.Range(0, count).Select(i =>
        {
            var c = emoji.Get(i);
            return motionlessHeldOut && GifFolderClips.IsHeldOut(i, count) ? new Clip(c.Frames, c.FrameCount, c.Height, c.Width, i < 10 ? "a red heart" : "the blue star") : c;
        }).ToList();
        string folder = dir.File("gifs");
        GifFolderClips.Export(folder, clips);
        return folder;
    }

    [Fact]
    public void A_comparison_on_a_gif_folder_trains_both_on_its_clips_and_samples_its_held_out_captions()
    {
        using var dir = new Mobius.Tests.Data.TempFolder();
        string folder = GifFolder(dir, 20, motionlessHeldOut: true);
        var sampled = new List<IReadOnlyList<string>>();
        var r = Comparison.Run(Options(2, TestContext.Current.CancellationToken) with { DataFolder = folder, SamplePrompts = 4, SampleSteps = 2 }, null, (_, _, captions, _) => sampled.Add(captions));

        Assert.Equal(new DataFolderInfo(folder, 18, 2), r.Data);
        Assert.Null(r.Motions);
        Assert.Equal(["a red heart", "the blue star", "a red heart", "the blue star"], r.Prompts);   // the held-out captions in turn
        Assert.Equal([r.Prompts, r.Prompts], sampled);
        Assert.Null(r.Serial.MotionScore);                          // sampled, but no caption names a motion to score against
        Assert.Null(r.Parallel.MotionScore);
        Assert.Equal(r.Serial.InitialValidationLoss, r.Parallel.InitialValidationLoss);
        Assert.True(double.IsFinite(r.Serial.ValidationLoss) && double.IsFinite(r.Parallel.ValidationLoss));
        Assert.Contains("\"data\"", r.ToJson());

        // Captions that name a motion are sampled and scored.
        using var dir2 = new Mobius.Tests.Data.TempFolder();
        float[]? pixels = null;
        var scored = Comparison.Run(Options(1, TestContext.Current.CancellationToken) with { DataFolder = GifFolder(dir2, 12, motionlessHeldOut: false), SamplePrompts = 4, SampleSteps = 2 },
            null, (_, _, _, p) => pixels = p);
        Assert.Equal(4, scored.Prompts.Count);
        Assert.Single(scored.Prompts.Distinct());                   // one held-out GIF, sampled 4 times from 4 starting noises
        Assert.Equal(4, scored.Difference.MotionScore!.Pairs);
        var micro = ModelConfig.Get("micro");
        int clip = micro.Frames * 3 * micro.Height * micro.Width;
        Assert.False(pixels.AsSpan(0, clip).SequenceEqual(pixels.AsSpan(clip, clip)), "a repeated caption must be sampled from other noise");
        Assert.NotNull(scored.Serial.MotionScore);
        Assert.Throws<ArgumentException>(() => Comparison.Run(Options(1, TestContext.Current.CancellationToken) with { DataFolder = folder, Motions = [Motion.MoveLeft] }));
    }

    [Fact]
    public void Captions_the_model_cannot_encode_are_refused_before_training_naming_the_line_and_every_unknown_word()
    {
        using var dir = new Mobius.Tests.Data.TempFolder();
        string folder = GifFolder(dir, 12, motionlessHeldOut: false);
        string captions = Path.Combine(folder, GifFolderClips.CaptionsFileName);
        var lines = File.ReadAllLines(captions);
        var config = ModelConfig.Get("micro");
        var tokenizer = Tokenizer.ForEmoji(config.TokenLength);

        lines[2] = "{\"file\": \"clip-0003.gif\", \"caption\": \"a red dragon flying\"}";
        lines[6] = "{\"file\": \"clip-0007.gif\", \"caption\": \"a wyvern\"}";
        File.WriteAllLines(captions, lines);
        var e = Assert.Throws<DataFormatException>(() => Comparison.OpenFolder(folder, config).CheckCaptions(tokenizer));
        Assert.Equal((captions, 3), (e.File, e.Line));
        Assert.Contains("\"dragon\", \"flying\"; 1 more line(s) too, 3 unknown word(s) in all (\"dragon\", \"flying\", \"wyvern\")", e.Message);
        var run = Assert.Throws<DataFormatException>(() => Comparison.Run(Options(1, TestContext.Current.CancellationToken) with { DataFolder = folder }));
        Assert.Equal(e.Message, run.Message);

        // Known words, but more of them than the text encoder takes.
        string longCaption = string.Join(' ', Enumerable.Repeat("red", tokenizer.MaxWords + 1));
        lines[2] = $"{{\"file\": \"clip-0003.gif\", \"caption\": \"{longCaption}\"}}";
        lines[6] = lines[5].Replace("clip-0006", "clip-0007");
        File.WriteAllLines(captions, lines);
        e = Assert.Throws<DataFormatException>(() => Comparison.OpenFolder(folder, config).CheckCaptions(tokenizer));
        Assert.Equal(3, e.Line);
        Assert.Contains($"caption has {tokenizer.MaxWords + 1} words; the model's text encoder takes at most {tokenizer.MaxWords}", e.Message);
    }
    [Fact]
    public void Profiling_on_the_cuda_backend_counts_each_topologys_calls_per_step()
    {
        if (!string.Equals(Environment.GetEnvironmentVariable("MOBIUS_CUDA"), "real", StringComparison.OrdinalIgnoreCase))
        {
            Environment.SetEnvironmentVariable("MOBIUS_CUDA", "sim");
        }

        // A ring bridge: its spatial chain runs on the backend's second stream, so calls of both streams are timed.
        var r = Comparison.Run(Options(1, TestContext.Current.CancellationToken) with
        {
            ValidateEvery = 0,
            ProfileSteps = 1,
            BackendFactory = () => new Mobius.Cuda.CudaBackend(),
            Bridge = "additive",
        });
        Assert.Equal(Environment.GetEnvironmentVariable("MOBIUS_STREAMS") == "1" ? 1 : 2, r.Streams);
        foreach (var t in new[] { r.Serial, r.Parallel })
        {
            Assert.True(t.PeakReservedBytes >= t.PeakBytes, $"reserved {t.PeakReservedBytes} below the peak in use {t.PeakBytes}"); // blocks round up; the cache adds
        }
        var serial = Assert.IsAssignableFrom<IReadOnlyDictionary<string, double>>(r.Serial.CallsPerStep);
        var parallel = Assert.IsAssignableFrom<IReadOnlyDictionary<string, double>>(r.Parallel.CallsPerStep);
        double Blas(IReadOnlyDictionary<string, double> c) => c.Where(kv => kv.Key.StartsWith("cublas", StringComparison.Ordinal)).Sum(kv => kv.Value);

        // Serial's backward runs the frozen spatial layers' GEMMs too; the parallel topology's never does.
        Assert.True(Blas(serial) > Blas(parallel) * 1.2, $"cuBLAS calls per step: serial {Blas(serial)}, parallel {Blas(parallel)}");
        Assert.True(serial.Values.Sum() > parallel.Values.Sum());
        foreach (var calls in new[] { serial, parallel })
        {
            Assert.Equal(1, calls.GetValueOrDefault("adamw_multi_f32"));     // every trainable tensor in one launch
            Assert.False(calls.ContainsKey("adamw_f32"));
        }

        // The steps timed call by call issue the same calls as the steps counted, each with a time of its own.
        foreach (var (calls, ms) in new[] { (serial, r.Serial.CallMsPerStep), (parallel, r.Parallel.CallMsPerStep) })
        {
            Assert.NotNull(ms);
            Assert.Equal(calls.Keys.Order(StringComparer.Ordinal), ms.Keys.Order(StringComparer.Ordinal));
            Assert.All(ms.Values, v => Assert.True(v >= 0));
            Assert.True(ms.Values.Sum() > 0);
        }

        // the CPU counts and times none
        var cpu = Comparison.Run(Options(1, TestContext.Current.CancellationToken) with { ProfileSteps = 1 });
        Assert.Equal(1, cpu.Streams);
        Assert.Null(cpu.Serial.CallsPerStep);
        Assert.Null(cpu.Serial.CallMsPerStep);
        Assert.NotNull(cpu.Serial.TimeByKind);
    }
}
