using System.CommandLine;
using Mobius.Engine;
using Mobius.Model;
using Mobius.Model.Training;
using Spectre.Console;

namespace Mobius.Cli;

/// <content><c>mobius compare</c> and <c>mobius demo</c>.</content>
public static partial class Commands
{
    // ---- compare and demo -------------------------------------------------------------------------

    private static Command Compare()
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "checkpoint both start from: stage 1 (default: the one that ships for tiny; a random text-to-image model otherwise), or a serial or loop-bridge text-to-video one both fine-tune (its frame noise unless --frame-noise)" };
        var steps = new Option<int>("--steps") { Description = "training steps per topology", DefaultValueFactory = _ => 100 };
        var output = new Option<string>("--out") { Description = "folder for report.md, result.json, plots and sample GIFs", DefaultValueFactory = _ => "mobius-compare" };
        var json = new Option<bool>("--json") { Description = "print one JSON object instead of the table" };
        var samples = new Option<int>("--samples") { Description = "clips each topology samples for the GIFs and the motion score: held-out captions, each once, then again from fresh starting noise (0: none)", DefaultValueFactory = _ => 4 };
        var sampleSteps = new Option<int>("--sample-steps") { Description = "DDIM steps when sampling", DefaultValueFactory = _ => 25 };
        var lr = new Option<float>("--lr") { Description = "learning rate, the same for both topologies", DefaultValueFactory = _ => 1e-4f };
        var profile = new Option<int>("--profile") { Description = "after everything else, N more steps per topology timed by layer kind (device-synchronised; not in the step times), and on the cuda backend N more with every kernel launch and library call timed on the device", DefaultValueFactory = _ => 0 };
        var frontier = FrontierOption(0);
        var cmd = new Command("compare", "Serial against parallel: same seed, data and config, in one run; a table (or --json), report.md, plots and GIFs.")
            { ConfigOption, checkpoint, steps, SeedOption, BackendOption, MathOption, output, json, samples, sampleSteps, lr, CosineOption, BatchOption, AccumulateOption, RanksOption, CollectivesOption, EmaOption, MinSnrOption, FrameNoiseOption, BridgeOption, MotionOption, DataOption, ThreadsOption, MemoryLimitOption, profile, FreezeOption, RecomputeOption, RecomputeTemporalOption, FrozenWeightsOption, SavedActivationsOption, OptimizerStateOption, ValidateEveryOption, ValidationBatchesOption, KeepBestOption, LoopCorrectionOption, LoopCorrectionWarmupOption, LoopCorrectionMomentumOption, LoopCorrectionModeOption, frontier, GuidanceOption, SampleFrameNoiseOption };
        cmd.SetAction(p => RunCompare(p.GetValue(ConfigOption)!, p.GetValue(checkpoint), p.GetValue(steps), p.GetValue(SeedOption), p.GetValue(BackendOption)!,
            p.GetValue(output)!, p.GetValue(json), p.GetValue(samples), p.GetValue(sampleSteps), p.GetValue(lr), MinSnr(p), FrameNoise(p), p.GetValue(BridgeOption), p.GetValue(MotionOption), p.GetValue(ThreadsOption), p.GetValue(MemoryLimitOption),
            p.GetValue(profile), p.GetValue(FreezeOption), p.GetValue(RecomputeOption), p.GetValue(RecomputeTemporalOption), p.GetValue(ValidateEveryOption), p.GetValue(KeepBestOption), p.GetValue(LoopCorrectionOption), p.GetValue(ValidationBatchesOption), p.GetValue(LoopCorrectionMomentumOption), p.GetValue(LoopCorrectionModeOption)!, p.GetValue(BatchOption), p.GetValue(frontier), p.GetValue(DataOption), p.GetValue(AccumulateOption), p.GetValue(EmaOption), p.GetValue(CosineOption), p.GetValue(LoopCorrectionWarmupOption), SampleFrameNoise(p), Guidance(p), FrozenWeights(p), SavedActivations(p), p.GetValue(MathOption), p.GetValue(RanksOption), p.GetValue(CollectivesOption)!, OptimizerState(p)));
        return cmd;
    }

    private static Command Demo()
    {
        var output = new Option<string>("--out") { Description = "folder for the report, plots and GIFs", DefaultValueFactory = _ => "mobius-demo" };
        var steps = new Option<int>("--steps") { Description = "training steps per topology", DefaultValueFactory = _ => 360 };
        var lr = new Option<float?>("--lr") { Description = $"learning rate, the same for both topologies (default: {FineTuneLearningRate:g} fine-tuning a text-to-video model, {FromImageLearningRate:g} from a text-to-image one, high for a short run)" };
        var validateEvery = new Option<int>("--validate-every") { Description = "also measure both validation losses every N steps (0: before and after training only)", DefaultValueFactory = _ => 60 };
        var samples = new Option<int>("--samples") { Description = "clips each topology samples for the GIFs and the motion score: held-out captions, each once, then again from fresh starting noise", DefaultValueFactory = _ => 8 };
        var validationBatches = new Option<int>("--validation-batches") { Description = "held-out batches in each validation loss (16 here: 32 clips, enough to tell the topologies' losses apart)", DefaultValueFactory = _ => 16 };
        var frontier = FrontierOption(20);
        var checkpoint = new Option<string?>("--checkpoint") { Description = "checkpoint both start from (default: the text-to-video model that ships, models/tiny-t2v.safetensors, fine-tuned on its motion and frame noise; models/tiny-t2i.safetensors: the temporal layers trained from the identity)" };
        var cmd = new Command("demo", "The main job: serial vs parallel fine-tuning of the tiny text-to-video model that ships, on the CPU (or a GPU with --backend cuda).")
            { checkpoint, output, steps, lr, CosineOption, samples, BatchOption, AccumulateOption, RanksOption, CollectivesOption, EmaOption, MinSnrOption, FrameNoiseOption, BridgeOption, MotionOption, DataOption, BackendOption, MathOption, SeedOption, ThreadsOption, FreezeOption, RecomputeOption, RecomputeTemporalOption, FrozenWeightsOption, SavedActivationsOption, OptimizerStateOption, validateEvery, validationBatches, KeepBestOption, LoopCorrectionOption, LoopCorrectionWarmupOption, LoopCorrectionMomentumOption, LoopCorrectionModeOption, frontier, GuidanceOption, SampleFrameNoiseOption };
        cmd.SetAction(p =>
        {
            string? ckpt = p.GetValue(checkpoint)
                ?? (File.Exists(DefaultVideoCheckpoint) ? DefaultVideoCheckpoint : File.Exists(DefaultCheckpoint) ? DefaultCheckpoint : null);
            if (ckpt is null)
            {
                AnsiConsole.MarkupLine("[yellow]the shipped checkpoints are missing; both topologies start from a random text-to-image model[/]");
            }
            else if (p.GetValue(checkpoint) is null && ckpt == DefaultCheckpoint)
            {
                AnsiConsole.MarkupLine("[yellow]the text-to-video checkpoint is missing; both topologies train their temporal layers from the identity[/]");
            }

            return RunCompare("tiny", ckpt, p.GetValue(steps), p.GetValue(SeedOption), p.GetValue(BackendOption)!, p.GetValue(output)!, json: false,
                samples: p.GetValue(samples), sampleSteps: 25, p.GetValue(lr), MinSnr(p), FrameNoise(p), p.GetValue(BridgeOption), p.GetValue(MotionOption), p.GetValue(ThreadsOption), 0,
                freeze: p.GetValue(FreezeOption), recomputeSpatial: p.GetValue(RecomputeOption), recomputeTemporal: p.GetValue(RecomputeTemporalOption),
                validateEvery: p.GetValue(validateEvery), keepBest: p.GetValue(KeepBestOption), loopCorrection: p.GetValue(LoopCorrectionOption),
                validationBatches: p.GetValue(validationBatches), loopCorrectionMomentum: p.GetValue(LoopCorrectionMomentumOption),
                loopCorrectionMode: p.GetValue(LoopCorrectionModeOption)!, batch: p.GetValue(BatchOption), frontier: p.GetValue(frontier), data: p.GetValue(DataOption), accumulate: p.GetValue(AccumulateOption), ema: p.GetValue(EmaOption), cosine: p.GetValue(CosineOption),
                loopCorrectionWarmup: p.GetValue(LoopCorrectionWarmupOption), sampleFrameNoise: SampleFrameNoise(p), guidance: Guidance(p), frozenWeights: FrozenWeights(p), savedActivations: SavedActivations(p), math: p.GetValue(MathOption), ranks: p.GetValue(RanksOption), collectives: p.GetValue(CollectivesOption)!, optimizerState: OptimizerState(p));
        });
        return cmd;
    }

    private static int RunCompare(string configName, string? checkpoint, int steps, int seed, string backend, string outDir, bool json, int samples, int sampleSteps,
        float? learningRate, float minSnrGamma, float? frameNoise, string? bridge, string? motion, int threads, long memoryLimitMb, int profileSteps = 0,
        string? freeze = null, bool recomputeSpatial = false, bool recomputeTemporal = false, int validateEvery = 0, bool keepBest = false, int loopCorrection = 0, int validationBatches = 4, float loopCorrectionMomentum = 0.9f, string loopCorrectionMode = "scale", int? batch = null, int frontier = 0, string? data = null, int accumulate = 1, float ema = 0f, int cosine = 0, int loopCorrectionWarmup = 0, float? sampleFrameNoise = null, float guidance = 4f, DType frozenWeights = DType.Float32, DType savedActivations = DType.Float32, string? math = null, int ranks = 1, string collectives = "auto", DType optimizerState = DType.Float32)
    {
        if (frontier < 0)
        {
            throw new UsageException($"--frontier must be 0 or more steps, got {frontier}.");
        }

        if (steps < 1)
        {
            throw new UsageException($"--steps must be at least 1, got {steps}.");
        }

        CheckValidation(validateEvery, validationBatches, keepBest);
        var correctionMode = ParseLoopCorrectionMode(loopCorrection, loopCorrectionMomentum, loopCorrectionMode);

        if (samples < 0)
        {
            throw new UsageException($"--samples must be 0 or more clips, got {samples}.");
        }

        if (profileSteps < 0)
        {
            throw new UsageException($"--profile must be 0 or more steps, got {profileSteps}.");
        }

        if (learningRate is { } given && !(given > 0 && given < 1))
        {
            throw new UsageException($"--lr must be in (0, 1), got {given}.");
        }

        var config = Configs.Get(configName);
        checkpoint ??= config.Name == "tiny" && File.Exists(DefaultCheckpoint) ? DefaultCheckpoint : null;
        var video = checkpoint is null ? null : Checkpoint.Load(checkpoint) is { Topology: not Topology.Spatial } c ? c : null;

        // A text-to-video model is fine-tuned on the motions it was trained on, unless told otherwise; with no
        // rate given (the demo), at the fine-tuning rate, or the short run's from a text-to-image model.
        RefuseMotionWithData(data, motion);
        motion ??= data is null ? video?.Extra.GetValueOrDefault(MotionsKey) : null;
        float lr = learningRate ?? (video is not null ? FineTuneLearningRate : FromImageLearningRate);

        var rankPlan = RankPlan.Of(backend, CheckRanks(ranks, loopCorrection), threads, memoryLimitMb, math, collectives);
        rankPlan.Create(0).Dispose(); // fail early and clearly
        var options = new ComparisonOptions
        {
            Config = config,
            Checkpoint = checkpoint,
            Steps = steps,
            Seed = seed,
            SamplePrompts = samples,
            SampleSteps = sampleSteps,
            SampleFrameNoise = sampleFrameNoise,
            Guidance = guidance,
            Train = new TrainOptions { Seed = seed, LearningRate = lr, Batch = CheckBatch(batch), Accumulate = CheckAccumulate(accumulate, loopCorrection), EmaDecay = CheckEma(ema), CosineDecaySteps = CheckCosine(cosine), MinSnrGamma = minSnrGamma, FrozenTemporal = ParseFreeze(freeze, config, bridge),
                RecomputeSpatial = recomputeSpatial, RecomputeTemporal = recomputeTemporal, LoopCorrectionEvery = loopCorrection, LoopCorrectionMomentum = loopCorrectionMomentum, LoopCorrectionMode = correctionMode,
                LoopCorrectionWarmup = CheckLoopCorrectionWarmup(loopCorrectionWarmup, loopCorrection), FrozenWeights = frozenWeights, SavedActivations = savedActivations, OptimizerState = optimizerState, Ranks = ranks },
            Bridge = ParseBridge(bridge) ?? ModelConfig.DefaultBridge,
            FrameNoiseCorrelation = frameNoise,
            Motions = ParseMotions(motion),
            DataFolder = data,
            BackendFactory = () => rankPlan.Create(0),
            RankBackendFactory = rankPlan.Create,
            CollectivesFactory = rankPlan.Collectives,
            ProfileSteps = profileSteps,
            FrontierSteps = frontier,
            FrontierTogether = backend == "cpu",
            ValidateEvery = validateEvery,
            ValidationBatches = validationBatches,
            KeepBest = keepBest,
            StopTraining = Stop,
        };
        try
        {
            Directory.CreateDirectory(outDir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot create the output folder {outDir}: {e.Message}");
        }

        var writer = new ReportWriter(outDir);
        StopsGracefully = true;
        ComparisonResult result;
        try
        {
            result = Ui.Compare(options, json, writer.WriteSamples, Cancellation);
        }
        finally
        {
            StopsGracefully = false;
        }

        writer.Write(result, options);
        if (json)
        {
            Console.WriteLine(result.ToJson());
        }
        else
        {
            Ui.PrintComparison(result);
            if (ReportWriter.RepeatedPrompts(result.Prompts) is { } repeated)
            {
                AnsiConsole.MarkupLine($"[grey]{Markup.Escape(repeated)}[/]");
            }

            AnsiConsole.MarkupLine($"report: [bold]{Markup.Escape(Path.Combine(outDir, "report.md"))}[/]");
            if (result.Prompts.Count > 0)
            {
                AnsiConsole.MarkupLine($"samples: [bold]{Markup.Escape(Path.Combine(outDir, "serial-samples.gif"))}[/] and [bold]{Markup.Escape(Path.Combine(outDir, "parallel-samples.gif"))}[/] " +
                    $"(a clip per caption), the frames side by side in [bold]{Markup.Escape(Path.Combine(outDir, "serial-frames.png"))}[/] and [bold]parallel-frames.png[/]");
            }
        }

        if (result.Steps < result.StepsRequested)
        {
            // Everything is written, but over fewer steps than asked for: a script must not take it for the full run.
            Console.Error.WriteLine($"mobius: stopped early: {result.Steps} of {result.StepsRequested} steps; the report covers those.");
            return ExitCodes.Cancelled;
        }

        return ExitCodes.Success;
    }
}
