using System.CommandLine;
using System.Globalization;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;
using Spectre.Console;

namespace Mobius.Cli;

/// <content><c>mobius info</c>: backends, devices, configs, and what a checkpoint holds.</content>
public static partial class Commands
{
    // ---- info --------------------------------------------------------------------------------------

    private static Command Info()
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "describe this checkpoint instead: its model, training, data and what it keeps" };
        var cmd = new Command("info", "Backends and devices found (and where native libraries were looked for), configs with parameter counts, the checkpoints that ship; or one checkpoint (--checkpoint).")
            { checkpoint };
        cmd.SetAction(p =>
        {
            if (p.GetValue(checkpoint) is { } path)
            {
                DescribeCheckpoint(path, Checkpoint.Load(path));
                return ExitCodes.Success;
            }

            using (var cpu = new CpuBackend())
            {
                AnsiConsole.MarkupLine($"[bold]cpu[/]: {Markup.Escape(cpu.DeviceName)}");
            }

            AnsiConsole.MarkupLine($"[bold]cuda[/]: {Markup.Escape(Backends.DescribeCuda())}");
            AnsiConsole.MarkupLine($"[bold]nccl[/] (--ranks on cuda): {Markup.Escape(Backends.DescribeNccl())}");
            var table = new Table().AddColumns("config", "channels", "frames x size", "parameters", "serial trainable", "parallel trainable", "temporal share");
            using var meter = new CpuBackend(threads: 1);
            foreach (var c in ModelConfig.Presets)
            {
                var counts = ParameterCounts.Of(c);
                table.AddRow(c.Name, string.Join("/", c.Channels), $"{c.Frames} x {c.Height}x{c.Width}", $"{counts.Total:N0}",
                    $"{counts.SerialTrainable:N0}", $"{counts.ParallelTrainable:N0}", $"{(double)counts.SerialTrainable / counts.Total:P0}");
            }

            AnsiConsole.Write(table);
            var shipped = new Table().Title("checkpoints that ship (mobius info --checkpoint FILE for one)").AddColumns("file", "model", "topology", "steps", "trained on");
            foreach (string file in new[] { DefaultCheckpoint, DefaultVideoCheckpoint }.Where(File.Exists))
            {
                var ckpt = Checkpoint.Load(file);
                shipped.AddRow(Markup.Escape(Path.GetFileName(file)), ckpt.Config.Name, ModelKind(ckpt),
                    $"{ckpt.Step:N0}", Markup.Escape(TrainedOn(ckpt)));
            }

            if (shipped.Rows.Count > 0)
            {
                AnsiConsole.Write(shipped);
            }

            return ExitCodes.Success;
        });
        return cmd;
    }

    /// <summary>"text-to-image", or "text-to-video, serial" / "text-to-video, parallel".</summary>
    private static string ModelKind(Checkpoint ckpt) =>
        ckpt.Topology == Topology.Spatial ? "text-to-image" : $"text-to-video, {ckpt.Topology.ToString().ToLowerInvariant()}";

    /// <summary>The clips a checkpoint was trained on, as its metadata records them.</summary>
    private static string TrainedOn(Checkpoint ckpt) =>
        ckpt.Extra.GetValueOrDefault(DataKey) is { } folder ? $"the GIFs of {folder}"
        : ckpt.Extra.GetValueOrDefault(MotionsKey) is { } motions ? $"generated clips: {motions}"
        : "generated clips, every motion";

    /// <summary>What <c>mobius info --checkpoint</c> prints.</summary>
    private static void DescribeCheckpoint(string path, Checkpoint ckpt)
    {
        var c = ckpt.Config;
        var table = new Table().Title(Markup.Escape(path)).AddColumns("", "").HideHeaders();
        void Row(string key, string value) => table.AddRow(Markup.Escape(key), Markup.Escape(value));
        Row("model", $"{ModelKind(ckpt)}{(ckpt.Topology == Topology.Spatial ? "" : " topology")} ({c.Name}{(ckpt.Topology == Topology.Parallel ? $", {c.Bridge} bridge" : "")})");
        Row("clips", $"{c.Frames} frames of {c.Height}x{c.Width}, frame noise correlation {c.FrameNoiseCorrelation.ToString("0.##", CultureInfo.InvariantCulture)}" +
            (ckpt.Topology == Topology.Spatial ? "" : $" (sampled from starting noise correlated {TextToVideo.SampleFrameNoiseFor(ckpt.Topology, c).ToString("0.##", CultureInfo.InvariantCulture)} unless --sample-frame-noise)"));
        Row("weights", $"{ckpt.Unet.Values.Sum(v => (long)v.Length) + ckpt.Text.Values.Sum(v => (long)v.Length):N0} parameters");
        Row("steps", $"{ckpt.Step:N0} (seed {ckpt.Seed})");
        Row("trained on", TrainedOn(ckpt));
        var words = ckpt.Vocabulary.Skip(Tokenizer.Specials.Count).Order(StringComparer.Ordinal).ToList();
        Row("vocabulary", $"{words.Count} words: {string.Join(", ", words)}");
        if (ckpt.TrainOptions is { } o)
        {
            string batch = o.Batch > 0 ? $"{o.Batch} clips" : $"{c.Batch} clips (the config's)";
            Row("recipe", FormattableString.Invariant($"lr {o.LearningRate:g3}{(o.CosineDecaySteps > 0 ? $" (cosine to a tenth at step {o.CosineDecaySteps})" : "")}, batch {batch}{(o.Accumulate > 1 ? $" x {o.Accumulate} accumulated" : "")}{(o.Ranks > 1 ? $" x {o.Ranks} ranks" : "")}, weight decay {o.WeightDecay:g3}, gradient clip {o.MaxGradNorm:g3}{(o.MinSnrGamma > 0 ? $", min-SNR {o.MinSnrGamma:g3}" : "")}{StorageNote(o.FrozenWeights, "frozen weights")}{StorageNote(o.SavedActivations, "saved activations")}{StorageNote(o.OptimizerState, "optimizer state")}{(o.LoopCorrectionEvery > 0 ? $", loop correction every {o.LoopCorrectionEvery} ({o.LoopCorrectionMode.ToString().ToLowerInvariant()}{(o.LoopCorrectionWarmup > 0 ? $", all exact to step {o.LoopCorrectionWarmup}" : "")})" : "")}"));
        }

        Row("resumable", ckpt.Optimizer.Count > 0 ? $"yes: optimizer state after {ckpt.OptimizerSteps:N0} steps (train --resume)" : "no: weights only");
        Row("moving average", ckpt.Ema is { } ema ? $"yes, decay {ckpt.TrainOptions?.EmaDecay.ToString("g4", CultureInfo.InvariantCulture) ?? "?"} ({ema.Count} tensors; sample draws with it)" : "no");
        if (ckpt.Extra.GetValueOrDefault(MathKey) is { } math)
        {
            Row("math", math == "fp32" ? "fp32 (strict)" : $"{math} tensor cores (train --resume on the cuda backend keeps it)");
        }

        if (ckpt.Extra.GetValueOrDefault("command") is { } command)
        {
            Row("made by", command);
        }

        AnsiConsole.Write(table);
    }
}
