using System.Globalization;
using System.Text;
using Mobius.Data;
using Mobius.Model;
using Mobius.Model.Training;

namespace Mobius.Cli;

/// <summary>Writes a comparison's report.md, result.json, plots (ScottPlot) and sample GIFs to a folder.</summary>
public sealed class ReportWriter(string folder)
{
    private readonly Dictionary<Topology, List<string>> _gifs = new();

    /// <summary>
    /// Writes one GIF per sample, a grid of all of them and a filmstrip PNG (a row per sample, a column per
    /// frame); called by the comparison as samples arrive.
    /// </summary>
    public void WriteSamples(Topology topology, ModelConfig config, IReadOnlyList<string> prompts, float[] pixels)
    {
        string name = topology.ToString().ToLowerInvariant();
        var clips = new List<Clip>();
        var files = new List<string>();
        int clipSize = config.Frames * 3 * config.Height * config.Width;
        for (int k = 0; k < prompts.Count; k++)
        {
            var frames = pixels.AsSpan(k * clipSize, clipSize).ToArray();
            clips.Add(new Clip(frames, config.Frames, config.Height, config.Width, prompts[k]));
            string file = $"{name}-{k + 1}-{Slug(prompts[k])}.gif";
            Gif.Write(Path.Combine(folder, file), frames, config.Frames, config.Height, config.Width, new GifWriteOptions { Upscale = 4 });
            files.Add(file);
        }

        Gif.WriteGrid(Path.Combine(folder, $"{name}-samples.gif"), clips, 0, new GifWriteOptions { Upscale = 4 });
        Filmstrip.Write(Path.Combine(folder, $"{name}-frames.png"), clips, upscale: 4);
        _gifs[topology] = files;
    }

    /// <summary>Writes result.json, the plots and report.md.</summary>
    public void Write(ComparisonResult r, ComparisonOptions options)
    {
        File.WriteAllText(Path.Combine(folder, "result.json"), r.ToJson());
        Plots(r);
        File.WriteAllText(Path.Combine(folder, "report.md"), Markdown(r, options));
    }

    private void Plots(ComparisonResult r)
    {
        var cats = r.Serial.Memory.Keys.Where(k => r.Serial.Memory[k] > 0 || r.Parallel.Memory[k] > 0).ToList();
        var mem = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var bars = new List<ScottPlot.Bar>();
        for (int t = 0; t < 2; t++)
        {
            var m = t == 0 ? r.Serial.Memory : r.Parallel.Memory;
            double bottom = 0;
            for (int c = 0; c < cats.Count; c++)
            {
                double mb = m[cats[c]] / 1048576.0;
                bars.Add(new ScottPlot.Bar { Position = t, ValueBase = bottom, Value = bottom + mb, FillColor = palette.GetColor(c) });
                bottom += mb;
            }
        }

        mem.Add.Bars(bars);
        for (int c = 0; c < cats.Count; c++)
        {
            mem.Legend.ManualItems.Add(new ScottPlot.LegendItem { LabelText = cats[c], FillColor = palette.GetColor(c) });
        }

        mem.Axes.Bottom.SetTicks([0, 1], ["serial", "parallel"]);
        mem.Axes.Margins(bottom: 0);
        mem.YLabel("MiB at peak");
        mem.Title($"Peak memory by category ({r.Config})");
        mem.SavePng(Path.Combine(folder, "memory.png"), 640, 420);

        var time = new ScottPlot.Plot();
        time.Add.Bars(new[] { r.Serial.StepMsMedian, r.Parallel.StepMsMedian });
        time.Axes.Bottom.SetTicks([0, 1], ["serial", "parallel"]);
        time.Axes.Margins(bottom: 0);
        time.YLabel("median step time (ms)");
        time.Title($"Step time ({r.Backend})");
        time.SavePng(Path.Combine(folder, "time.png"), 640, 420);

        // Every step's loss, faint (its spikes are the timesteps near zero), and its running median over a
        // fortieth of the run, which is what the eye should follow; the y axis stops above the 95th percentile.
        var loss = new ScottPlot.Plot();
        int window = Math.Max(1, r.Steps / 40);
        for (int t = 0; t < 2; t++)
        {
            var losses = (t == 0 ? r.Serial : r.Parallel).Losses.ToArray();
            var color = palette.GetColor(t);
            var raw = loss.Add.Signal(losses);
            raw.Color = color.WithAlpha(0.25);
            if (window > 1)
            {
                var median = loss.Add.Signal(RunningMedian(losses, window));
                median.Color = color;
                median.LineWidth = 2;
                median.LegendText = $"{(t == 0 ? "serial" : "parallel")}, running median of {window}";
            }
            else
            {
                raw.LegendText = t == 0 ? "serial" : "parallel";
            }
        }

        if (r.ValidateEvery > 0)
        {
            for (int t = 0; t < 2; t++)
            {
                var curve = (t == 0 ? r.Serial : r.Parallel).ValidationCurve;
                var v = loss.Add.Scatter(curve.Select(c => (double)c.Step).ToArray(), curve.Select(c => c.Loss).ToArray());
                v.Color = palette.GetColor(t + 2);
                v.LegendText = $"{(t == 0 ? "serial" : "parallel")} validation";
                v.LineWidth = 2;
            }
        }

        var all = r.Serial.Losses.Concat(r.Parallel.Losses).Where(double.IsFinite).Order().ToList();
        if (all.Count > 0)
        {
            double top = all[(int)Math.Min(all.Count - 1, Math.Ceiling(0.95 * (all.Count - 1)))];
            var validation = r.Serial.ValidationCurve.Concat(r.Parallel.ValidationCurve).Select(c => c.Loss).Where(double.IsFinite);
            top = Math.Max(top, validation.DefaultIfEmpty(0).Max());
            loss.Axes.SetLimitsY(0, top * 1.1);
        }

        loss.XLabel("step");
        loss.YLabel("loss");
        loss.Title("Training loss (same batches) and validation loss");
        loss.ShowLegend(ScottPlot.Alignment.UpperRight);
        loss.SavePng(Path.Combine(folder, "loss.png"), 640, 420);
    }

    private string Markdown(ComparisonResult r, ComparisonOptions o)
    {
        var ci = CultureInfo.InvariantCulture;
        string Mb(long b) => (b / 1048576.0).ToString("0.0", ci);
        var sb = new StringBuilder();
        sb.AppendLine($"# Serial vs parallel: {r.Config}").AppendLine();
        if (r.Steps < r.StepsRequested)
        {
            sb.AppendLine($"**Stopped early: {r.Steps} of the {r.StepsRequested} steps asked for** (interrupted; both topologies took the same steps, and everything below is over them).");
            sb.AppendLine();
        }

        sb.AppendLine($"One run, same seed ({r.Seed}), same data, same config; {r.Steps} training steps per topology of {r.Batch} clips each{(r.Accumulate > 1 ? $" x {r.Accumulate} batches accumulated (one optimizer step per {r.Accumulate} forward and backward passes)" : "")}{(r.Ranks > 1 ? $" on each of {r.Ranks} data-parallel ranks per topology, their gradients averaged before every step (step times, memory and the call profile are rank 0's, and every rank holds as much; the frontier and the planned operating points are one rank's)" : "")}{(r.EmaDecay > 0 ? $", validated and sampled with the weights' moving average (EMA decay {r.EmaDecay:g4})" : "")} at learning rate {r.LearningRate:g3}{(r.CosineDecaySteps > 0 ? $" (along a cosine to a tenth of it at step {r.CosineDecaySteps})" : "")}, steps alternating; min-SNR weighting {(r.MinSnrGamma > 0 ? $"gamma {r.MinSnrGamma:g3}" : "off")}, frame noise correlation {r.FrameNoiseCorrelation:g3}.");
        sb.AppendLine($"Parallel topology with the {r.Bridge} bridge (docs/architecture.md). Clips: {(r.Data is { } data ? DataClips(data) : r.Motions is null ? "every motion" : string.Join(", ", r.Motions))}.{(r.FrozenTemporal is null ? "" : $" Temporal layers kept frozen in both: {string.Join(", ", r.FrozenTemporal)}.")}{(r.RecomputeSpatial ? " Serial recomputes its frozen spatial layers in backward (--recompute-spatial)." : "")}{(r.RecomputeTemporal ? " Both recompute their temporal layers in backward (--recompute-temporal)." : "")}{r.FrozenWeights switch { "bfloat16" => " Both keep their frozen weights in bf16 (--frozen-weights bf16).", "int8" => " Both keep their frozen weights in int8 with a scale per 128 elements (--frozen-weights int8).", _ => "" }}{r.SavedActivations switch { "bfloat16" => " Both keep their activations for backward in bf16 (--saved-activations bf16).", "int8" => " Both keep their activations for backward in int8 with a scale per 128 elements (--saved-activations int8).", _ => "" }}{(r.OptimizerState == "bfloat16" ? " Both keep AdamW's moments in bf16 (--optimizer-state bf16)." : "")}{(r.LoopCorrectionEvery > 0 ? $" The loop bridge takes serial's exact gradient every {r.LoopCorrectionEvery} steps{(r.LoopCorrectionWarmup > 0 ? $" (and at each of the first {r.LoopCorrectionWarmup})" : "")} and corrects the steps between {(r.LoopCorrectionMode == "scale" ? "by scaling its gradient per tensor by the fitted coefficient on the exact one" : "by the running difference")}, momentum {r.LoopCorrectionMomentum:g3} (--loop-correction, experimental)." : "")} Backend: {r.Backend}{r.MathMode switch { "tf32" => ", TF32 tensor cores for cuBLAS and cuDNN (--math tf32)", "bf16" => ", bf16 tensor cores for cuBLAS and TF32 for cuDNN (--math bf16)", _ => "" }}{(r.Streams > 1 ? "; the parallel topology's spatial chain on a second stream beside its temporal ring" : "")}. Started from: {StartedFrom(r.Start)}.");
        sb.AppendLine($"Written {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC by mobius {typeof(ReportWriter).Assembly.GetName().Version}.").AppendLine();
        sb.AppendLine("| | serial | parallel | parallel / serial | paper |");
        sb.AppendLine("|---|---:|---:|---:|---:|");
        sb.AppendLine(ci, $"| median step time (ms, after {o.WarmupSteps} warm-up steps) | {r.Serial.StepMsMedian:0.0} | {r.Parallel.StepMsMedian:0.0} | {r.Ratio.StepMs:0.000} | 0.88 |");
        sb.AppendLine(ci, $"| mean step time (ms, after {o.WarmupSteps} warm-up steps) | {r.Serial.StepMsMean:0.0} | {r.Parallel.StepMsMean:0.0} | {r.Ratio.StepMsMean:0.000} | |");
        sb.AppendLine(ci, $"| peak memory (MiB) | {Mb(r.Serial.PeakBytes)} | {Mb(r.Parallel.PeakBytes)} | {r.Ratio.PeakBytes:0.000} | 0.76 |");
        sb.AppendLine(ci, $"| saved activations (MiB) | {Mb(r.Serial.SavedActivationBytes)} | {Mb(r.Parallel.SavedActivationBytes)} | {r.Ratio.SavedActivationBytes:0.000} | |");
        var (serialFrozen, serialRest) = UNet3D.SplitSaved(r.Serial.SavedByKind);
        var (parallelFrozen, parallelRest) = UNet3D.SplitSaved(r.Parallel.SavedByKind);
        sb.AppendLine(ci, $"| of them, the frozen spatial layers' (MiB) | {Mb(serialFrozen)} | {Mb(parallelFrozen)} | | |");
        sb.AppendLine(ci, $"| of them, the rest: temporal layers, bridges, head, loss (MiB) | {Mb(serialRest)} | {Mb(parallelRest)} | {(serialRest > 0 ? ((double)parallelRest / serialRest).ToString("0.000", ci) : "")} | |");
        foreach (var cat in r.Serial.Memory.Keys)
        {
            sb.AppendLine(ci, $"| at peak: {cat} (MiB) | {Mb(r.Serial.Memory[cat])} | {Mb(r.Parallel.Memory.GetValueOrDefault(cat))} | | |");
        }

        sb.AppendLine(ci, $"| trainable parameters | {r.Serial.TrainableParams:N0} | {r.Parallel.TrainableParams:N0} | | |");
        sb.AppendLine(ci, $"| final training loss (last tenth) | {r.Serial.FinalLoss:0.0000} | {r.Parallel.FinalLoss:0.0000} | | |");
        sb.AppendLine(ci, $"| validation loss before training | {r.Serial.InitialValidationLoss:0.0000} | {r.Parallel.InitialValidationLoss:0.0000} | | |");
        if (r.ValidateEvery > 0)
        {
            sb.AppendLine(ci, $"| best validation loss (at step) | {r.Serial.BestValidationLoss:0.0000} ({r.Serial.BestValidationStep}) | {r.Parallel.BestValidationLoss:0.0000} ({r.Parallel.BestValidationStep}) | | |");
        }

        if (r.KeepBest)
        {
            sb.AppendLine(ci, $"| validation loss of the kept weights (step) | {r.Serial.ValidationLoss:0.0000} ({r.Serial.WeightsStep}) | {r.Parallel.ValidationLoss:0.0000} ({r.Parallel.WeightsStep}) | | |");
        }
        else
        {
            sb.AppendLine(ci, $"| validation loss | {r.Serial.ValidationLoss:0.0000} | {r.Parallel.ValidationLoss:0.0000} | | |");
        }
        sb.AppendLine($"| {string.Join(" | ", Ui.TimeToLossCells(r))} | |");
        sb.AppendLine(ci, $"| motion score of samples (0..1) | {Ui.Score(r.Serial.MotionScore)} | {Ui.Score(r.Parallel.MotionScore)} | | |");
        sb.AppendLine(ci, $"| movement matches caption | {Ui.Score(r.Serial.MotionMatch)} | {Ui.Score(r.Parallel.MotionMatch)} | | |");
        sb.AppendLine(ci, $"| frame-to-frame consistency | {Ui.Score(r.Serial.Consistency)} | {Ui.Score(r.Parallel.Consistency)} | | |").AppendLine();
        sb.AppendLine(r.TimeToParallelLoss.SerialStep is { } reached
            ? $"Training time to the parallel topology's final validation loss: serial's time to the first of its validations at or below it (step {reached}{(r.ValidateEvery > 0 ? $"; validations every {r.ValidateEvery} steps, so an upper bound, and the ratio a lower one" : "")}) against the parallel topology's for its {r.TimeToParallelLoss.ParallelStep} steps; below 1, the parallel topology got there in less time. Where the loss curves are flat, a small gap in loss is a large one in steps.\n"
            : "Training time to the parallel topology's final validation loss: serial did not come down to it at any validation of this run, or the parallel topology ended no lower than the untrained model.\n");
        var differences = Ui.DifferenceRows(r.Difference).ToList();
        if (differences.Count > 0)
        {
            sb.AppendLine("Quality, parallel minus serial, paired: the validation loss clip by clip (both topologies see the same held-out clips, timesteps and noise), the motion scores prompt by prompt (the same prompts and starting noise); the interval is 95 % from Student's t over the pairs, and where it holds 0 this run cannot tell the topologies apart on that measure:").AppendLine();
            sb.AppendLine("| measure | parallel - serial | 95 % interval | over | |").AppendLine("|---|---:|---:|---:|---|");
            foreach (var row in differences)
            {
                sb.AppendLine($"| {string.Join(" | ", row)} |");
            }

            sb.AppendLine();
        }

        if (r.ValidateEvery > 0)
        {
            sb.AppendLine($"Validation loss every {r.ValidateEvery} steps (the same {r.ValidationBatches} held-out batches for both){(r.KeepBest ? "; each topology was then put back to the weights of its lowest, and sampled with them" : "")}:").AppendLine();
            sb.AppendLine("| step | serial | parallel |").AppendLine("|---:|---:|---:|");
            foreach (var (sv, pv) in r.Serial.ValidationCurve.Zip(r.Parallel.ValidationCurve))
            {
                sb.AppendLine(ci, $"| {sv.Step} | {sv.Loss:0.0000} | {pv.Loss:0.0000} |");
            }

            sb.AppendLine();
        }

        if (r.Parallel.LoopCoefficients is { Count: > 0 } coefficients)
        {
            sb.AppendLine("The loop correction's fitted coefficients at the end of training, by temporal layer (1: the loop's gradient taken as it is; 0: the layer learns from the exact steps alone):").AppendLine();
            sb.AppendLine("| layer | tensors | mean | min | max |").AppendLine("|---|---:|---:|---:|---:|");
            foreach (var (layer, values) in LoopCoefficientsByLayer(coefficients))
            {
                sb.AppendLine(ci, $"| {layer} | {values.Count} | {values.Average():0.00} | {values.Min():0.00} | {values.Max():0.00} |");
            }

            sb.AppendLine();
        }

        if (r.Frontier is { Count: > 0 } frontier)
        {
            string run = MemoryPlan.PolicyName(r.RecomputeSpatial, r.RecomputeTemporal);
            sb.AppendLine($"Both topologies at every recompute policy, measured after the run: {o.FrontierSteps} steps per case after {o.WarmupSteps} warm-up steps, the cases' steps taking turns ({(o.FrontierTogether ? "all eight at once" : "the two topologies of a policy at a time")}); recomputing changes no gradient, only memory and time; this run's policy marked *:").AppendLine();
            sb.AppendLine("| recompute | serial ms | parallel ms | time ratio | serial peak (MiB) | parallel peak | peak ratio | serial saved | parallel saved | saved ratio |").AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var (policy, s, p) in Frontier.Pairs(frontier))
            {
                sb.AppendLine(ci, $"| {policy}{(policy == run ? " *" : "")} | {s.StepMsMedian:0.0} | {p.StepMsMedian:0.0} | {p.StepMsMedian / s.StepMsMedian:0.000} | {Mb(s.PeakBytes)} | {Mb(p.PeakBytes)} | {(double)p.PeakBytes / s.PeakBytes:0.000} | {Mb(s.SavedActivationBytes)} | {Mb(p.SavedActivationBytes)} | {(double)p.SavedActivationBytes / s.SavedActivationBytes:0.000} |");
            }

            sb.AppendLine().AppendLine(Frontier.Summary(frontier) + (r.LoopCorrectionEvery == 0
                ? " (The parallel topology keeps no spatial activation, so its spatial rows run the very steps of its none and temporal rows: their difference is this machine's noise.)"
                : "")).AppendLine();
        }
        else if (r.OperatingPoints is { Count: > 0 } points)
        {
            string run = MemoryPlan.PolicyName(r.RecomputeSpatial, r.RecomputeTemporal);
            sb.AppendLine("Memory at every recompute policy, planned on the meta backend with this run's config, batch and options (the engine's own tensors; recomputing changes no gradient, only memory and time; step times are measured for this run's policy only, marked *):").AppendLine();
            sb.AppendLine("| recompute | serial peak (MiB) | serial saved | parallel peak | parallel saved | peak ratio | saved ratio |").AppendLine("|---|---:|---:|---:|---:|---:|---:|");
            foreach (var p in points)
            {
                sb.AppendLine(ci, $"| {p.Recompute}{(p.Recompute == run ? " *" : "")} | {Mb(p.Serial.PeakBytes)} | {Mb(p.Serial.SavedActivationBytes)} | {Mb(p.Parallel.PeakBytes)} | {Mb(p.Parallel.SavedActivationBytes)} | {p.Ratio.PeakBytes:0.000} | {p.Ratio.SavedActivationBytes:0.000} |");
            }

            var (serialLeast, parallelLeast) = MemoryPlan.LeastPeak(points);
            sb.AppendLine().AppendLine(ci, $"Each topology at its own lowest peak: serial {Mb(serialLeast.Serial.PeakBytes)} MiB ({serialLeast.Recompute}), parallel {Mb(parallelLeast.Parallel.PeakBytes)} MiB ({parallelLeast.Recompute}), ratio {(double)parallelLeast.Parallel.PeakBytes / serialLeast.Serial.PeakBytes:0.000}.").AppendLine();
        }

        sb.AppendLine("Saved activations by layer kind at the start of backward (MiB):").AppendLine();
        sb.AppendLine("| kind | serial | parallel |").AppendLine("|---|---:|---:|");
        foreach (var kind in r.Serial.SavedByKind.Keys.Union(r.Parallel.SavedByKind.Keys).OrderBy(k => k, StringComparer.Ordinal))
        {
            sb.AppendLine($"| {kind} | {Mb(r.Serial.SavedByKind.GetValueOrDefault(kind))} | {Mb(r.Parallel.SavedByKind.GetValueOrDefault(kind))} |");
        }

        if (r.Serial.SavedByOp.Count > 0 || r.Parallel.SavedByOp.Count > 0)
        {
            sb.AppendLine().AppendLine("The same by layer kind and op, serial's largest first (MiB; empty where a topology keeps nothing for it):").AppendLine();
            sb.AppendLine("| kind | op | serial | parallel |").AppendLine("|---|---|---:|---:|");
            foreach (var (kind, op, serial, parallel) in Ui.SavedByOpRows(r.Serial.SavedByOp, r.Parallel.SavedByOp))
            {
                sb.AppendLine($"| {kind} | {op} | {(serial > 0 ? Mb(serial) : "")} | {(parallel > 0 ? Mb(parallel) : "")} |");
            }
        }

        if (r.Serial.TimeByKind is { } st && r.Parallel.TimeByKind is { } pt)
        {
            sb.AppendLine().AppendLine($"Time by layer kind over {o.ProfileSteps} extra steps per topology after everything above (ms per step; the device synchronised at every kind boundary, so these steps are slower than the step times above; \"Data\" is the host making the batch, outside the step times; \"Optimizer\" the gradient norm, AdamW and any EMA; \"Other\" the loss, the uploads and the gaps between kinds):").AppendLine();
            sb.AppendLine("| kind | serial forward | serial backward | parallel forward | parallel backward |").AppendLine("|---|---:|---:|---:|---:|");
            foreach (var row in Ui.TimeRows(st, pt))
            {
                sb.AppendLine($"| {string.Join(" | ", row)} |");
            }
        }

        if (r.Serial.CallsPerStep is { } sc && r.Parallel.CallsPerStep is { } pc)
        {
            sb.AppendLine().AppendLine($"Kernel launches and library calls per profiled step (result.json's calls_per_step has them by name): serial {Ui.CallSummary(sc)}; parallel {Ui.CallSummary(pc)}.");
        }

        if (r.Serial.CallMsPerStep is { } sm && r.Parallel.CallMsPerStep is { } pm)
        {
            sb.AppendLine().AppendLine($"Device time by call over {o.ProfileSteps} more steps per topology, each launch and library call between a pair of CUDA events (ms per step; the {Ui.TopCalls} largest, result.json's call_ms_per_step has every one):").AppendLine();
            sb.AppendLine("| call | serial ms | serial calls | parallel ms | parallel calls |").AppendLine("|---|---:|---:|---:|---:|");
            foreach (var row in Ui.CallTimeRows(sm, r.Serial.CallsPerStep, pm, r.Parallel.CallsPerStep))
            {
                sb.AppendLine($"| {string.Join(" | ", row)} |");
            }
        }

        sb.AppendLine().AppendLine("![memory](memory.png) ![time](time.png) ![loss](loss.png)").AppendLine();
        sb.AppendLine("## Samples").AppendLine();
        sb.AppendLine($"DDIM {o.SampleSteps} steps, guidance {o.Guidance.ToString(ci)}, seed {r.Seed}, starting noise correlated {r.SampleFrameNoise.ToString(ci)} across a clip's frames; prompts from the validation split" +
            (RepeatedPrompts(r.Prompts) is { } repeated ? $" ({repeated})." : ".")).AppendLine();
        sb.AppendLine("| prompt | serial | parallel |").AppendLine("|---|---|---|");
        for (int k = 0; k < r.Prompts.Count; k++)
        {
            string Cell(Topology t, IReadOnlyList<double?> scores) =>
                _gifs.TryGetValue(t, out var f) ? $"![{t}]({f[k]}) motion {(scores[k] is { } score ? score.ToString("0.000", ci) : "n/a")}" : "";
            sb.AppendLine($"| {r.Prompts[k]} | {Cell(Topology.Serial, r.Serial.SampleScores)} | {Cell(Topology.Parallel, r.Parallel.SampleScores)} |");
        }

        foreach (var t in new[] { Topology.Serial, Topology.Parallel }.Where(_gifs.ContainsKey))
        {
            string name = t.ToString().ToLowerInvariant();
            sb.AppendLine().AppendLine($"{t}, frame by frame (a row per prompt above, in order; a column per frame):").AppendLine();
            sb.AppendLine($"![{name} frames]({name}-frames.png)");
        }

        sb.AppendLine().AppendLine("All figures measured in this run; result.json holds every step's loss and time.");
        return sb.ToString();
    }

    /// <summary>What both topologies started from, in words.</summary>
    /// <summary>A data folder's clips, as the table and the report name them.</summary>
    internal static string DataClips(DataFolderInfo data) =>
        $"the GIFs of {data.Folder} ({data.TrainClips} to train on, {data.ValidationClips} held out for validation and sample prompts; motion scores only for captions naming a motion)";

    internal static string StartedFrom(StartPoint? start) => start switch
    {
        null => "a random text-to-image model",
        { Topology: "spatial" } => $"the text-to-image model {start.Checkpoint} (temporal layers at the identity)",
        _ => $"the text-to-video model {start.Checkpoint} ({start.Topology}, {start.Step} steps), fine-tuned in both topologies",
    };

    /// <summary>Says how often the sampled captions repeat (fewer distinct ones than samples); null when each is sampled once.</summary>
    internal static string? RepeatedPrompts(IReadOnlyList<string> prompts)
    {
        int distinct = prompts.Distinct(StringComparer.Ordinal).Count();
        return distinct >= prompts.Count ? null :
            $"the validation split has {distinct} distinct captions for these clips, so the {prompts.Count} samples take them again in turn, each from its own starting noise";
    }

    /// <summary>
    /// Coefficients grouped by temporal layer, in the model's order: a parameter name up to its first part that
    /// starts with "temp_" ("unet.down.0.temp_conv.convs.3.weight" belongs to "down.0.temp_conv").
    /// </summary>
    internal static List<(string Layer, List<float> Values)> LoopCoefficientsByLayer(IReadOnlyDictionary<string, float> coefficients)
    {
        var layers = new List<(string Layer, List<float> Values)>();
        foreach (var (name, c) in coefficients)
        {
            var parts = name.Split('.');
            int start = parts[0] == "unet" ? 1 : 0;
            int end = Array.FindIndex(parts, start, p => p.StartsWith("temp_", StringComparison.Ordinal));
            string layer = string.Join('.', parts[start..(end < 0 ? parts.Length - 1 : end + 1)]);
            int at = layers.FindIndex(l => l.Layer == layer);
            if (at < 0)
            {
                layers.Add((layer, [c]));
            }
            else
            {
                layers[at].Values.Add(c);
            }
        }

        return layers;
    }

    /// <summary>The median of each window of <paramref name="window"/> values ending at each index (shorter at the start).</summary>
    internal static double[] RunningMedian(IReadOnlyList<double> values, int window)
    {
        var result = new double[values.Count];
        for (int i = 0; i < values.Count; i++)
        {
            int start = Math.Max(0, i - window + 1);
            var slice = values.Skip(start).Take(i - start + 1).Order().ToList();
            result[i] = slice.Count % 2 == 1 ? slice[slice.Count / 2] : (slice[slice.Count / 2 - 1] + slice[slice.Count / 2]) / 2;
        }

        return result;
    }

    private static string Slug(string s) => new(s.Select(c => char.IsAsciiLetterOrDigit(c) ? char.ToLowerInvariant(c) : '-').ToArray());
}
