using System.Globalization;
using Mobius.Model;
using Mobius.Model.Training;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Spectre.Console;

namespace Mobius.Cli;

/// <summary>Progress bars and tables; plain log lines when the output is not a terminal.</summary>
public static class Ui
{
    private static bool Interactive => AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;

    /// <summary>
    /// Runs <paramref name="steps"/> training steps with a progress bar (or a line every tenth), saving every
    /// <paramref name="saveEvery"/>; every <paramref name="validateEvery"/> steps (and after the last) it also
    /// calls <paramref name="validate"/> with the step and shows the loss it returns.
    /// </summary>
    public static void Train(string title, Trainer trainer, int steps, int saveEvery, string path, IReadOnlyDictionary<string, string> extra, CancellationToken cancel,
        int validateEvery = 0, Func<int, float>? validate = null, TextWriter? log = null)
    {
        if (steps < 1)
        {
            throw new UsageException($"--steps must be at least 1, got {steps}.");
        }

        log?.WriteLine("step,loss,ms,grad_norm,validation_loss");

        int lastStep = trainer.StepsDone + steps;
        int lastSaved = trainer.StepsDone;
        string lastValidation = "";
        long peak = 0, saved = 0;
        try
        {
            Steps();
            AnsiConsole.MarkupLine(Markup.Escape(FormattableString.Invariant(
                $"memory: {peak / 1048576.0:0.0} MiB at the peak of a step, {saved / 1048576.0:0.0} MiB of activations kept for backward (the largest of the {steps} steps{(trainer.Options.Ranks > 1 ? $"; rank 0's, each of the {trainer.Options.Ranks} ranks holds as much" : "")})")));
        }
        catch (Exception e) when ((e is OperationCanceledException or NonFiniteException or OutOfDeviceMemoryException) && trainer.StepsDone > lastSaved)
        {
            // Each stops a step before its optimizer update (a non-finite loss raises before the optimizer steps; the
            // memory a step needs is taken in its forward and backward passes, and the update allocates nothing once
            // the moments exist, after step 1): the weights and the optimizer are those after the last whole step, so
            // keep them rather than lose the run.
            string why = e switch
            {
                OperationCanceledException => "cancelled",
                NonFiniteException => $"the loss of step {trainer.StepsDone + 1} is not finite",
                _ => $"out of memory in step {trainer.StepsDone + 1}",
            };
            try
            {
                trainer.Save(path, extra);
                AnsiConsole.MarkupLine(Markup.Escape($"{why}: saved {path} after step {trainer.StepsDone}; continue with --resume {path}"));
            }
            catch (Exception saveError) when (e is OutOfDeviceMemoryException)
            {
                AnsiConsole.MarkupLine(Markup.Escape($"{why}; saving the last whole step failed too ({saveError.Message})"));
            }

            throw;
        }

        return;

        void Steps()
        {
            if (Interactive)
            {
                AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask(title, maxValue: steps);
                        for (int i = 0; i < steps; i++)
                        {
                            One(s =>
                            {
                                task.Description = $"{title}: step {s.Step}, loss {s.Loss:0.0000}, {s.Milliseconds:0} ms{lastValidation}";
                                task.Increment(1);
                            });
                        }
                    });
                return;
            }

            int every = Math.Max(1, steps / 10);
            for (int i = 0; i < steps; i++)
            {
                One(s =>
                {
                    if ((i + 1) % every == 0 || i == 0)
                    {
                        Console.WriteLine($"{title}: step {s.Step} ({i + 1}/{steps}), loss {s.Loss:0.0000}, {s.Milliseconds:0} ms");
                    }
                });
            }
        }

        void One(Action<StepStats> report)
        {
            cancel.ThrowIfCancellationRequested();
            var s = trainer.TrainStep();
            peak = Math.Max(peak, s.Memory.PeakBytes);
            saved = Math.Max(saved, s.SavedActivationBytes);
            report(s);
            if (saveEvery > 0 && s.Step % saveEvery == 0)
            {
                trainer.Save(path, extra);
                lastSaved = s.Step;
            }

            string validation = "";
            if (validate is not null && validateEvery > 0 && (s.Step % validateEvery == 0 || s.Step == lastStep))
            {
                float v = validate(s.Step);
                validation = v.ToString("R", CultureInfo.InvariantCulture);
                lastValidation = $", validation {v:0.0000} at step {s.Step}";
                if (!Interactive)
                {
                    Console.WriteLine($"{title}: validation loss {v:0.0000} after step {s.Step}");
                }
            }

            if (log is not null)
            {
                // One line a step, flushed, so a stopped run keeps every step it took.
                log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{s.Step},{s.Loss:R},{s.Milliseconds:0.###},{s.GradNorm:R},{validation}"));
                log.Flush();
            }
        }

    }

    /// <summary>
    /// Runs <paramref name="work"/> (which reports how many of <paramref name="total"/> units are done) under a
    /// progress bar, or with a line every tenth when the output is not a terminal.
    /// </summary>
    public static void Counted(string title, int total, Action<IProgress<int>> work, CancellationToken cancel)
    {
        if (Interactive)
        {
            AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask(Markup.Escape(title), maxValue: Math.Max(1, total));
                    work(new InlineProgress<int>(done =>
                    {
                        cancel.ThrowIfCancellationRequested();
                        task.Value = done;
                    }));
                });
            return;
        }

        int every = Math.Max(1, total / 10);
        work(new InlineProgress<int>(done =>
        {
            cancel.ThrowIfCancellationRequested();
            if (done % every == 0 || done == total)
            {
                Console.WriteLine($"{title}: {done}/{total}");
            }
        }));
    }

    /// <summary>Runs a comparison with one progress bar per topology and phase (quiet with --json).</summary>
    public static ComparisonResult Compare(ComparisonOptions options, bool quiet, Action<Topology, ModelConfig, IReadOnlyList<string>, float[]> onSamples, CancellationToken cancel)
    {
        if (quiet)
        {
            return Comparison.Run(options, new InlineProgress<CompareProgress>(_ => cancel.ThrowIfCancellationRequested()), onSamples);
        }

        if (!Interactive)
        {
            int every = Math.Max(1, options.Steps / 10);
            var log = new InlineProgress<CompareProgress>(p =>
            {
                cancel.ThrowIfCancellationRequested();
                if (p.Phase == "train" && (p.Done % every == 0 || p.Done == 1))
                {
                    Console.WriteLine($"{p.Topology.ToString().ToLowerInvariant(),-8} train step {p.Done}/{p.Total}, loss {p.Loss:0.0000}");
                }
                else if (p.Phase == "validated")
                {
                    Console.WriteLine($"{p.Topology.ToString().ToLowerInvariant(),-8} validation loss {p.Loss:0.0000} after step {p.Done}");
                }
                else if (p.Phase == "frontier")
                {
                    if (p.Done == 0 || p.Done == p.Total || p.Done % Math.Max(1, p.Total / 5) == 0)
                    {
                        Console.WriteLine($"frontier: both topologies at every recompute policy, round {p.Done}/{p.Total}");
                    }
                }
                else if (p.Phase == "read")
                {
                    if (p.Done == 0)
                    {
                        Console.WriteLine($"reading the {p.Total} GIFs of {options.DataFolder}");
                    }
                }
                else if (p.Phase != "train" && p.Done == 0)
                {
                    Console.WriteLine($"{p.Topology.ToString().ToLowerInvariant(),-8} {p.Phase}");
                }
            });
            return Comparison.Run(options, log, onSamples);
        }

        ComparisonResult result = null!;
        AnsiConsole.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<(string, Topology), ProgressTask>();
                var validated = new Dictionary<Topology, string>();
                var bars = new InlineProgress<CompareProgress>(p =>
                {
                    cancel.ThrowIfCancellationRequested();
                    if (p.Phase == "validated")
                    {
                        validated[p.Topology] = $", validation {p.Loss:0.0000} at step {p.Done}";
                        return;
                    }

                    if (!tasks.TryGetValue((p.Phase, p.Topology), out var t))
                    {
                        t = ctx.AddTask(p.Phase switch
                        {
                            "frontier" => "frontier: every recompute policy, taking turns",
                            "read" => Markup.Escape($"reading the GIFs of {options.DataFolder}"),
                            _ => $"{p.Topology.ToString().ToLowerInvariant()} {p.Phase}",
                        }, maxValue: Math.Max(1, p.Total));
                        tasks[(p.Phase, p.Topology)] = t;
                    }

                    t.MaxValue = Math.Max(1, p.Total);

                    t.Value = p.Done;
                    if (p.Phase == "train")
                    {
                        t.Description = $"{p.Topology.ToString().ToLowerInvariant()} train, loss {p.Loss:0.0000}{validated.GetValueOrDefault(p.Topology)}";
                    }
                    else if (p.Phase == "validate")
                    {
                        t.Value = t.MaxValue;
                    }
                });
                result = Comparison.Run(options, bars, onSamples);
            });
        return result;
    }

    /// <summary>The side-by-side table.</summary>
    public static void PrintComparison(ComparisonResult r)
    {
        var t = new Table().Title($"[bold]serial vs parallel[/] ({Markup.Escape(r.Bridge)} bridge{(r.Motions is null ? "" : ", " + Markup.Escape(string.Join(", ", r.Motions)))}{(r.RecomputeSpatial ? ", serial recomputing spatial layers" : "")}{(r.RecomputeTemporal ? ", both recomputing temporal layers" : "")}{r.FrozenWeights switch { "bfloat16" => ", bf16 frozen weights", "int8" => ", int8 frozen weights", _ => "" }}{r.SavedActivations switch { "bfloat16" => ", bf16 saved activations", "int8" => ", int8 saved activations", _ => "" }}{(r.OptimizerState == "bfloat16" ? ", bf16 optimizer state" : "")}): {Markup.Escape(r.Config)}, {r.Steps} steps of {r.Batch} clips{(r.Accumulate > 1 ? $" x {r.Accumulate} accumulated" : "")}{(r.Ranks > 1 ? $" x {r.Ranks} ranks (time and memory rank 0's)" : "")}{(r.EmaDecay > 0 ? $", EMA {r.EmaDecay:g4}" : "")}{(r.Steps < r.StepsRequested ? $" (stopped early, of {r.StepsRequested})" : "")}, seed {r.Seed}, {Markup.Escape(r.Backend)}")
            .AddColumns("", "serial", "parallel", "parallel / serial", "paper");
        t.AddRow("median step time", $"{r.Serial.StepMsMedian:0} ms", $"{r.Parallel.StepMsMedian:0} ms", $"{r.Ratio.StepMs:0.00}", "0.88");
        if (r.LoopCorrectionEvery > 0)
        {
            t.AddRow("mean step time (exact steps in)", $"{r.Serial.StepMsMean:0} ms", $"{r.Parallel.StepMsMean:0} ms", $"{r.Ratio.StepMsMean:0.00}", "");
        }

        t.AddRow("peak memory", Commands.Mb(r.Serial.PeakBytes), Commands.Mb(r.Parallel.PeakBytes), $"{r.Ratio.PeakBytes:0.00}", "0.76");
        t.AddRow("saved activations", Commands.Mb(r.Serial.SavedActivationBytes), Commands.Mb(r.Parallel.SavedActivationBytes), $"{r.Ratio.SavedActivationBytes:0.00}", "");
        foreach (var row in SavedSplitRows(r.Serial.SavedByKind, r.Parallel.SavedByKind))
        {
            t.AddRow([.. row, ""]);
        }
        foreach (var cat in r.Serial.Memory.Keys)
        {
            t.AddRow($"  at peak: {cat}", Commands.Mb(r.Serial.Memory[cat]), Commands.Mb(r.Parallel.Memory.GetValueOrDefault(cat)), "", "");
        }

        t.AddRow("trainable parameters", $"{r.Serial.TrainableParams:N0}", $"{r.Parallel.TrainableParams:N0}", "", "");
        t.AddRow("final train loss", $"{r.Serial.FinalLoss:0.0000}", $"{r.Parallel.FinalLoss:0.0000}", "", "");
        t.AddRow("validation loss before training", $"{r.Serial.InitialValidationLoss:0.0000}", $"{r.Parallel.InitialValidationLoss:0.0000}", "", "");
        if (r.ValidateEvery > 0)
        {
            t.AddRow("best validation loss (step)", $"{r.Serial.BestValidationLoss:0.0000} ({r.Serial.BestValidationStep})", $"{r.Parallel.BestValidationLoss:0.0000} ({r.Parallel.BestValidationStep})", "", "");
        }

        t.AddRow(r.KeepBest ? "validation loss, kept weights (step)" : "validation loss",
            r.KeepBest ? $"{r.Serial.ValidationLoss:0.0000} ({r.Serial.WeightsStep})" : $"{r.Serial.ValidationLoss:0.0000}",
            r.KeepBest ? $"{r.Parallel.ValidationLoss:0.0000} ({r.Parallel.WeightsStep})" : $"{r.Parallel.ValidationLoss:0.0000}", "", "");
        var ttl = TimeToLossCells(r);
        t.AddRow(ttl[0], ttl[1], ttl[2], ttl[3], "");
        t.AddRow("motion score (samples)", Score(r.Serial.MotionScore), Score(r.Parallel.MotionScore), "", "");
        t.AddRow("  movement matches caption", Score(r.Serial.MotionMatch), Score(r.Parallel.MotionMatch), "", "");
        t.AddRow("  frame consistency", Score(r.Serial.Consistency), Score(r.Parallel.Consistency), "", "");
        AnsiConsole.Write(t);
        var rows = DifferenceRows(r.Difference).ToList();
        if (rows.Count > 0)
        {
            var q = new Table().Title("[bold]quality, parallel - serial[/] (paired: same held-out clips, timesteps and noise; same prompts and starting noise)")
                .AddColumns("measure", "difference", "95 % interval", "over", "");
            foreach (var row in rows)
            {
                q.AddRow(row.Select(Markup.Escape).ToArray());
            }

            AnsiConsole.Write(q);
        }

        if (r.Start is { Topology: not "spatial" })
        {
            AnsiConsole.MarkupLine($"both started from {Markup.Escape(ReportWriter.StartedFrom(r.Start))}");
        }

        if (r.Data is { } data)
        {
            AnsiConsole.MarkupLine(Markup.Escape($"both trained on {ReportWriter.DataClips(data)}"));
        }

        if (r.Frontier is { Count: > 0 } frontier)
        {
            PrintFrontier(frontier, MemoryPlan.PolicyName(r.RecomputeSpatial, r.RecomputeTemporal));
        }
        else if (r.OperatingPoints is { Count: > 0 } points)
        {
            PrintOperatingPoints(points, MemoryPlan.PolicyName(r.RecomputeSpatial, r.RecomputeTemporal), "this run's");
        }

        if (r.Serial.TimeByKind is { } st && r.Parallel.TimeByKind is { } pt)
        {
            var k = new Table().Title("[bold]time by layer kind[/] (ms per step, device synchronised at every kind)")
                .AddColumns("kind", "serial forward", "serial backward", "parallel forward", "parallel backward");
            foreach (var row in TimeRows(st, pt))
            {
                k.AddRow(row);
            }

            AnsiConsole.Write(k);
        }

        if (r.Serial.CallsPerStep is { } sc && r.Parallel.CallsPerStep is { } pc)
        {
            AnsiConsole.MarkupLine(Markup.Escape($"calls per step: serial {CallSummary(sc)}; parallel {CallSummary(pc)}"));
        }

        if (r.Serial.CallMsPerStep is { } sm && r.Parallel.CallMsPerStep is { } pm)
        {
            var c = new Table().Title($"[bold]device time by call[/] (ms per step, each call between CUDA events; the {TopCalls} largest)")
                .AddColumns("call", "serial ms", "serial calls", "parallel ms", "parallel calls");
            foreach (var row in CallTimeRows(sm, r.Serial.CallsPerStep, pm, r.Parallel.CallsPerStep))
            {
                c.AddRow(row.Select(Markup.Escape).ToArray());
            }

            AnsiConsole.Write(c);
        }
    }

    /// <summary>How many calls the device-time tables show: the largest by both topologies' time together.</summary>
    public const int TopCalls = 15;

    /// <summary>
    /// Rows of the device-time-by-call table: the <see cref="TopCalls"/> calls with the most time in both topologies
    /// together, then one row for the rest and one for the total.
    /// </summary>
    public static List<string[]> CallTimeRows(IReadOnlyDictionary<string, double> serialMs, IReadOnlyDictionary<string, double>? serialCalls,
        IReadOnlyDictionary<string, double> parallelMs, IReadOnlyDictionary<string, double>? parallelCalls)
    {
        var ci = CultureInfo.InvariantCulture;
        var names = serialMs.Keys.Union(parallelMs.Keys)
            .OrderByDescending(n => serialMs.GetValueOrDefault(n) + parallelMs.GetValueOrDefault(n)).ThenBy(n => n, StringComparer.Ordinal).ToList();
        string Ms(double v) => v.ToString("0.000", ci);
        string Calls(IReadOnlyDictionary<string, double>? calls, string n) => calls is null ? "" : calls.GetValueOrDefault(n).ToString("0.#", ci);
        var rows = names.Take(TopCalls)
            .Select(n => new[] { n, Ms(serialMs.GetValueOrDefault(n)), Calls(serialCalls, n), Ms(parallelMs.GetValueOrDefault(n)), Calls(parallelCalls, n) })
            .ToList();
        if (names.Count > TopCalls)
        {
            var rest = names.Skip(TopCalls).ToList();
            rows.Add([$"{rest.Count} others", Ms(rest.Sum(n => serialMs.GetValueOrDefault(n))), "", Ms(rest.Sum(n => parallelMs.GetValueOrDefault(n))), ""]);
        }

        rows.Add(["total", Ms(serialMs.Values.Sum()), "", Ms(parallelMs.Values.Sum()), ""]);
        return rows;
    }

    /// <summary>"1,915 (1,265 kernel launches, 650 cuBLAS, 47 cuDNN)": a step's calls by library.</summary>
    public static string CallSummary(IReadOnlyDictionary<string, double> calls)
    {
        double Of(Func<string, bool> which) => calls.Where(kv => which(kv.Key)).Sum(kv => kv.Value);
        static bool Blas(string n) => n.StartsWith("cublas", StringComparison.Ordinal);
        static bool Dnn(string n) => n.StartsWith("cudnn", StringComparison.Ordinal);
        var ci = CultureInfo.InvariantCulture;
        return string.Create(ci, $"{Of(_ => true):N0} ({Of(n => !Blas(n) && !Dnn(n)):N0} kernel launches, {Of(Blas):N0} cuBLAS, {Of(Dnn):N0} cuDNN)");
    }

    /// <summary>Both topologies at every recompute policy, measured with their steps taking turns; <paramref name="marked"/> (the run's policy) starred.</summary>
    public static void PrintFrontier(IReadOnlyList<FrontierPoint> points, string marked)
    {
        var m = new Table().Title("[bold]both topologies at every recompute policy[/] (measured, steps taking turns; this run's marked *)")
            .AddColumns("recompute", "serial step", "parallel step", "time ratio", "serial peak", "parallel peak", "peak ratio", "saved ratio");
        foreach (var (policy, s, p) in Frontier.Pairs(points))
        {
            m.AddRow(policy + (policy == marked ? " *" : ""), $"{s.StepMsMedian.ToString("0", CultureInfo.InvariantCulture)} ms", $"{p.StepMsMedian.ToString("0", CultureInfo.InvariantCulture)} ms",
                (p.StepMsMedian / s.StepMsMedian).ToString("0.00", CultureInfo.InvariantCulture), Commands.Mb(s.PeakBytes), Commands.Mb(p.PeakBytes),
                ((double)p.PeakBytes / s.PeakBytes).ToString("0.00", CultureInfo.InvariantCulture), ((double)p.SavedActivationBytes / s.SavedActivationBytes).ToString("0.00", CultureInfo.InvariantCulture));
        }

        AnsiConsole.Write(m);
        AnsiConsole.MarkupLine($"[grey]{Markup.Escape(Frontier.Summary(points))}[/]");
    }

    /// <summary>Both topologies' planned memory at every recompute policy, <paramref name="marked"/> (the policy of the run or plan printed above) starred.</summary>
    public static void PrintOperatingPoints(IReadOnlyList<OperatingPoint> points, string marked, string whose)
    {
        var m = new Table().Title($"[bold]memory at every recompute policy[/] (planned; {whose} marked *)")
            .AddColumns("recompute", "serial peak", "serial saved", "parallel peak", "parallel saved", "peak ratio", "saved ratio");
        foreach (var p in points)
        {
            m.AddRow(p.Recompute + (p.Recompute == marked ? " *" : ""), Commands.Mb(p.Serial.PeakBytes), Commands.Mb(p.Serial.SavedActivationBytes),
                Commands.Mb(p.Parallel.PeakBytes), Commands.Mb(p.Parallel.SavedActivationBytes),
                p.Ratio.PeakBytes.ToString("0.00", CultureInfo.InvariantCulture), p.Ratio.SavedActivationBytes.ToString("0.00", CultureInfo.InvariantCulture));
        }

        AnsiConsole.Write(m);
        var (serialLeast, parallelLeast) = MemoryPlan.LeastPeak(points);
        AnsiConsole.MarkupLine(string.Create(CultureInfo.InvariantCulture, $"[grey]each at its own lowest peak: serial {Commands.Mb(serialLeast.Serial.PeakBytes)} ({serialLeast.Recompute}), parallel {Commands.Mb(parallelLeast.Parallel.PeakBytes)} ({parallelLeast.Recompute}): {(double)parallelLeast.Parallel.PeakBytes / serialLeast.Serial.PeakBytes:0.00}[/]"));
    }

    /// <summary>
    /// Rows of the saved-by-op table: layer kind, op, serial's bytes, parallel's bytes (0 where a topology keeps
    /// nothing for that op), serial's largest first.
    /// </summary>
    internal static IEnumerable<(string Kind, string Op, long Serial, long Parallel)> SavedByOpRows(IReadOnlyList<TapeOpStats> serial, IReadOnlyList<TapeOpStats> parallel)
    {
        var s = serial.ToDictionary(o => (o.Kind, o.Op), o => o.SavedBytes);
        var p = parallel.ToDictionary(o => (o.Kind, o.Op), o => o.SavedBytes);
        return s.Keys.Union(p.Keys)
            .Select(k => (k.Kind, k.Op, s.GetValueOrDefault(k), p.GetValueOrDefault(k)))
            .OrderByDescending(r => r.Item3).ThenByDescending(r => r.Item4).ThenBy(r => r.Kind, StringComparer.Ordinal).ThenBy(r => r.Op, StringComparer.Ordinal);
    }

    /// <summary>
    /// What the saved-bytes ratio is made of, as two table rows (label, serial, parallel, ratio): the frozen spatial layers'
    /// part (<see cref="UNet3D.FrozenSpatialKinds"/>), which only serial keeps, and the rest, which both keep.
    /// </summary>
    public static IEnumerable<string[]> SavedSplitRows(IReadOnlyDictionary<string, long> serial, IReadOnlyDictionary<string, long> parallel)
    {
        var (serialFrozen, serialRest) = UNet3D.SplitSaved(serial);
        var (parallelFrozen, parallelRest) = UNet3D.SplitSaved(parallel);
        yield return ["  of them, the frozen spatial layers'", Commands.Mb(serialFrozen), Commands.Mb(parallelFrozen), ""];
        yield return ["  of them, the rest (temporal layers, bridges, head, loss)", Commands.Mb(serialRest), Commands.Mb(parallelRest),
            serialRest > 0 ? ((double)parallelRest / serialRest).ToString("0.00", CultureInfo.InvariantCulture) : ""];
    }

    /// <summary>Prints what each op keeps for backward, by layer kind, in both topologies (`plan --by-op`).</summary>
    public static void PrintSavedByOp(IReadOnlyList<TapeOpStats> serial, IReadOnlyList<TapeOpStats> parallel)
    {
        var t = new Table().Title("[bold]saved for backward by layer kind and op[/] (at the start of backward)")
            .AddColumn("layer kind").AddColumn("op").AddColumn("serial", c => c.RightAligned()).AddColumn("parallel", c => c.RightAligned());
        foreach (var (kind, op, s, p) in SavedByOpRows(serial, parallel))
        {
            t.AddRow(Markup.Escape(kind), Markup.Escape(op), s > 0 ? Commands.Mb(s) : "", p > 0 ? Commands.Mb(p) : "");
        }

        t.AddRow("[bold]all[/]", "", Commands.Mb(serial.Sum(o => o.SavedBytes)), Commands.Mb(parallel.Sum(o => o.SavedBytes)));
        AnsiConsole.Write(t);
    }

    /// <summary>
    /// The row of training time to the parallel topology's final validation loss: label, serial, parallel, ratio.
    /// Serial's step is the first validation at or below that loss, so its time is an upper bound.
    /// </summary>
    internal static string[] TimeToLossCells(ComparisonResult r)
    {
        var t = r.TimeToParallelLoss;
        var ci = System.Globalization.CultureInfo.InvariantCulture;
        string label = $"training time to parallel's validation loss ({t.Loss.ToString("0.0000", ci)})";
        string parallel = $"{(t.ParallelMs / 1000).ToString("0.0", ci)} s ({t.ParallelStep} steps)";
        if (t.SerialStep is not { } step)
        {
            string why = t.Loss < r.Parallel.InitialValidationLoss ? $"not reached in {r.Steps} steps" : "no lower than untrained";
            return [label, why, parallel, ""];
        }

        return [label, $"{(t.SerialMs!.Value / 1000).ToString("0.0", ci)} s ({(r.ValidateEvery > 0 ? "by " : "")}step {step})", parallel, t.Ratio!.Value.ToString("0.00", ci)];
    }

    /// <summary>
    /// The quality measures' paired differences as rows: measure, parallel minus serial, its 95 % interval, the
    /// pairs, and what the interval says (lower validation loss and higher motion scores are better).
    /// </summary>
    internal static IEnumerable<string[]> DifferenceRows(QualityDifference d)
    {
        var ci = System.Globalization.CultureInfo.InvariantCulture;
        foreach (var (name, diff, format, unit, lowerIsBetter) in new[]
        {
            ("validation loss", d.ValidationLoss, "+0.0000;-0.0000;0.0000", "held-out clips", true),
            ("motion score", d.MotionScore, "+0.000;-0.000;0.000", "prompts", false),
            ("movement matches caption", d.MotionMatch, "+0.000;-0.000;0.000", "prompts", false),
            ("frame consistency", d.Consistency, "+0.000;-0.000;0.000", "prompts", false),
        })
        {
            if (diff is null)
            {
                continue;
            }

            string verdict = diff.IncludesZero ? "not told apart"
                : (diff.Mean < 0) == lowerIsBetter ? "parallel better" : "parallel worse";
            yield return [name, diff.Mean.ToString(format, ci), $"{diff.Low.ToString(format, ci)} to {diff.High.ToString(format, ci)}", $"{diff.Pairs} {unit}", verdict];
        }
    }

    /// <summary>
    /// Rows of the time-by-kind table (kind; serial forward, backward; parallel forward, backward, in ms), most
    /// expensive (serial, then parallel) first; a kind one topology lacks gets empty cells.
    /// </summary>
    internal static IEnumerable<string[]> TimeRows(IReadOnlyDictionary<string, KindTime> serial, IReadOnlyDictionary<string, KindTime> parallel)
    {
        string Ms(IReadOnlyDictionary<string, KindTime> d, string kind, bool forward) =>
            d.TryGetValue(kind, out var v) ? (forward ? v.ForwardMs : v.BackwardMs).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture) : "";
        return serial.Keys.Union(parallel.Keys)
            .OrderByDescending(k => serial.TryGetValue(k, out var v) ? v.ForwardMs + v.BackwardMs : 0)
            .ThenByDescending(k => parallel.TryGetValue(k, out var v) ? v.ForwardMs + v.BackwardMs : 0)
            .ThenBy(k => k, StringComparer.Ordinal)
            .Select(k => new[] { k, Ms(serial, k, true), Ms(serial, k, false), Ms(parallel, k, true), Ms(parallel, k, false) });
    }

    /// <summary>A 0..1 score with three decimals, or "n/a" when nothing was sampled.</summary>
    internal static string Score(double? value) => value is { } v ? v.ToString("0.000", System.Globalization.CultureInfo.InvariantCulture) : "n/a";
}
