using System.CommandLine;
using System.Globalization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Model;
using Mobius.Model.Training;
using Spectre.Console;

namespace Mobius.Cli;

/// <content><c>mobius plan</c>: a step's memory, planned on the meta backend.</content>
public static partial class Commands
{
    // ---- plan -------------------------------------------------------------------------------------

    private static Command Plan()
    {
        var json = new Option<bool>("--json") { Description = "print one JSON object instead of the table" };
        var frames = new Option<int?>("--frames") { Description = "frames per clip, 2..32 (default: the config's; ms256: 16)" };
        var size = new Option<string?>("--size") { Description = "clip size in pixels, HxW or one number for a square, e.g. 128 (default: the config's; ms256: 64, a 32x32 latent)" };
        var byOp = new Option<bool>("--by-op") { Description = "also print what each op keeps for backward, by layer kind, in both topologies (in --json always: saved_by_op)" };
        var budget = new Option<long>("--budget-mib") { Description = "also find each topology's largest batch whose planned peak, in allocator blocks, fits in this many MiB (the engine's tensors: leave room for the CUDA context and libraries), at the recompute policy asked for (0: no search)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("plan", "The memory of a training step of both topologies, planned without a device: a dry run on the meta backend, the same allocations as a real step, nothing computed.")
            { ConfigOption, BatchOption, frames, size, budget, EmaOption, BridgeOption, FreezeOption, RecomputeOption, RecomputeTemporalOption, FrozenWeightsOption, SavedActivationsOption, OptimizerStateOption, LoopCorrectionOption, LoopCorrectionModeOption, byOp, json };
        cmd.SetAction(p =>
        {
            var config = Configs.Get(p.GetValue(ConfigOption)!);
            string? bridge = ParseBridge(p.GetValue(BridgeOption));
            config = Reshape(config with { Bridge = bridge ?? ModelConfig.DefaultBridge }, p.GetValue(frames), p.GetValue(size));
            var options = new TrainOptions
            {
                Batch = CheckBatch(p.GetValue(BatchOption)),
                EmaDecay = CheckEma(p.GetValue(EmaOption)),
                FrozenTemporal = ParseFreeze(p.GetValue(FreezeOption), config, bridge),
                RecomputeSpatial = p.GetValue(RecomputeOption),
                RecomputeTemporal = p.GetValue(RecomputeTemporalOption),
                FrozenWeights = FrozenWeights(p),
                SavedActivations = SavedActivations(p),
                OptimizerState = OptimizerState(p),
                LoopCorrectionEvery = CheckLoopCorrection(p.GetValue(LoopCorrectionOption)),
                LoopCorrectionMode = ParseLoopCorrectionMode(p.GetValue(LoopCorrectionOption), momentum: null, p.GetValue(LoopCorrectionModeOption)!),
            };
            long budgetMib = p.GetValue(budget);
            if (budgetMib < 0)
            {
                throw new UsageException($"--budget-mib must be 0 (no search) or more, got {budgetMib}.");
            }

            var plan = MemoryPlan.Plan(config, options);
            var points = MemoryPlan.OperatingPoints(config, options);
            LargestBatchPlan? largest = null;
            if (budgetMib > 0)
            {
                var (serialBatch, parallelBatch) = MemoryPlan.LargestBatch(config, options, budgetMib * 1048576);
                largest = new LargestBatchPlan(budgetMib * 1048576, serialBatch, parallelBatch);
            }

            if (p.GetValue(json))
            {
                Console.WriteLine((plan with { OperatingPoints = points, LargestBatch = largest }).ToJson());
                return ExitCodes.Success;
            }

            var recompute = string.Join(" and ", new[] { options.RecomputeSpatial ? "spatial" : null, options.RecomputeTemporal ? "temporal" : null }.OfType<string>());
            var t = new Table().Title($"[bold]planned memory of a training step[/]: {Markup.Escape(config.Name)}, {config.Frames} frames of {config.Height}x{config.Width}, batch {plan.Batch}, {Markup.Escape(config.Bridge)} bridge" +
                (recompute.Length > 0 ? $", recomputing {recompute} layers" : "") + StorageNote(options.FrozenWeights, "frozen weights") + StorageNote(options.SavedActivations, "saved activations") + StorageNote(options.OptimizerState, "optimizer state"));
            t.AddColumn("").AddColumn("serial", c => c.RightAligned()).AddColumn("parallel", c => c.RightAligned()).AddColumn("parallel / serial", c => c.RightAligned());
            t.AddRow("peak", Mb(plan.Serial.PeakBytes), Mb(plan.Parallel.PeakBytes), plan.PeakRatio.ToString("0.00", CultureInfo.InvariantCulture));
            t.AddRow("peak in allocator blocks", Mb(plan.Serial.PeakBlockBytes), Mb(plan.Parallel.PeakBlockBytes), "");
            t.AddRow("saved for backward", Mb(plan.Serial.SavedActivationBytes), Mb(plan.Parallel.SavedActivationBytes), plan.SavedRatio.ToString("0.00", CultureInfo.InvariantCulture));
            foreach (var row in Ui.SavedSplitRows(plan.Serial.SavedByKind, plan.Parallel.SavedByKind))
            {
                t.AddRow(row);
            }
            foreach (var category in plan.Serial.AtPeak.Keys.Union(plan.Parallel.AtPeak.Keys))
            {
                t.AddRow($"  at peak: {category}", Mb(plan.Serial.AtPeak.GetValueOrDefault(category)), Mb(plan.Parallel.AtPeak.GetValueOrDefault(category)), "");
            }

            t.AddRow("trainable parameters", plan.Serial.TrainableParams.ToString("N0", CultureInfo.InvariantCulture), plan.Parallel.TrainableParams.ToString("N0", CultureInfo.InvariantCulture), "");
            AnsiConsole.Write(t);
            if (p.GetValue(byOp))
            {
                Ui.PrintSavedByOp(plan.Serial.SavedByOp, plan.Parallel.SavedByOp);
            }

            Ui.PrintOperatingPoints(points, MemoryPlan.PolicyName(options.RecomputeSpatial, options.RecomputeTemporal), "the one above");
            if (largest is { } l)
            {
                string Clips(int n) => n switch { 0 => "not one clip", 1 => "1 clip", _ => $"{n} clips" };
                AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                    $"largest batch within {budgetMib} MiB{(recompute.Length > 0 ? $", recomputing {recompute} layers" : "")}: serial {Clips(l.Serial)}, parallel {Clips(l.Parallel)}") +
                    (l.Serial > 0 ? FormattableString.Invariant($" ({(double)l.Parallel / l.Serial:0.##} times serial's)") : "")));
            }

            AnsiConsole.MarkupLine("[grey]the engine's own tensors only: a GPU adds its libraries' workspace, the allocator's cache and the CUDA context[/]");
            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary><paramref name="config"/> with <c>--frames</c> and <c>--size</c> (HxW, or N for N x N) when given, checked as a whole.</summary>
    private static ModelConfig Reshape(ModelConfig config, int? frames, string? size)
    {
        if (frames is { } f)
        {
            if (f is < 2 or > 32)
            {
                throw new UsageException($"--frames must be 2..32 (two frames at least to move between; the temporal attention kernel takes 32), got {f}.");
            }

            config = config with { Frames = f };
        }

        if (size is not null)
        {
            int[] sides = [.. size.Split('x', 'X').Select(x => int.TryParse(x, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v : 0)];
            if (sides.Length is not (1 or 2) || sides.Any(v => v <= 0))
            {
                throw new UsageException($"--size must be HxW or one number of pixels, e.g. 64x96 or 128, got '{size}'.");
            }

            config = config with { Height = sides[0], Width = sides[^1] };
        }

        try
        {
            config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--frames/--size: {e.Message}");
        }

        return config;
    }
}
