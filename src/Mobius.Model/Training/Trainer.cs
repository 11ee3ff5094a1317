using System.Diagnostics;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.Distributed;
using Mobius.Engine.Optim;
using Mobius.Model.Diffusion;

namespace Mobius.Model.Training;
/// <summary>
/// Trains a <see cref="TextToVideo"/> model: DDPM epsilon prediction with MSE, AdamW on trainable
/// parameters only, gradient clipping, caption dropout. Step k's batch (clips, timesteps, noise,
/// dropped captions) depends only on the seed and k, so a resumed run continues exactly.
/// </summary>
public sealed partial class Trainer : IDisposable
{
    private readonly TextToVideo _model;
    private readonly IClipSource _data;
    private readonly AdamW _optimizer;
    private readonly Dictionary<Parameter, Tensor> _loopBias = new();
    private readonly Dictionary<Parameter, LoopScale> _loopScale = new();
    private readonly Dictionary<Parameter, Tensor> _ema = new();
    private bool _emaInPlace;
    private int _loopBiasFolds;
    private (int Step, Task<List<Batch>> Batches)? _prefetch;
    private readonly ICollectives _collectives;
    private readonly List<(TextToVideo Model, AdamW Optimizer)> _replicas;

    /// <summary>Creates a trainer; stage 2 freezes the spatial UNet and text encoder first.</summary>
    public Trainer(TextToVideo model, IClipSource data, Stage stage, TrainOptions options)
        : this(model, [], data, stage, options)
    {
    }

    /// <summary>
    /// Creates a data-parallel trainer (<see cref="TrainOptions.Ranks"/>): <paramref name="model"/> is rank 0, and
    /// each of <paramref name="replicas"/> (as many as <c>Ranks - 1</c>: the same config and topology, each on its
    /// own backend) one more rank. Every parameter of rank 0 is copied into the replicas first, so they start the
    /// same whatever they were loaded with. Each step splits its clips among the ranks, runs forward and backward
    /// on every rank at once (a thread each), averages the gradients (<paramref name="collectives"/>; default
    /// <see cref="HostCollectives"/>) and steps every rank's optimizer alike: the update that gradient accumulation
    /// over the same batches takes, and the same weights on every rank. <see cref="Evaluate"/> spreads its batches
    /// over the ranks; sampling, the EMA and checkpoints use rank 0; a step's time and memory are rank 0's.
    /// </summary>
    public Trainer(TextToVideo model, IReadOnlyList<TextToVideo> replicas, IClipSource data, Stage stage, TrainOptions options, ICollectives? collectives = null)
    {
        ArgumentNullException.ThrowIfNull(replicas);
        _model = model;
        _data = data;
        Stage = stage;
        Options = options;
        PrefetchBatches = model.Backend.Name == "cuda";
        if (data.Count == 0)
        {
            throw new ArgumentException("the training data has no clips.");
        }

        if (options.Batch < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"the batch must be at least 1 clip (0: the config's), got {options.Batch}.");
        }

        if (options.Accumulate < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"gradient accumulation needs at least 1 batch a step, got {options.Accumulate}.");
        }

        if (!(options.EmaDecay >= 0 && options.EmaDecay < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"the EMA decay must be in [0, 1) (0: off), got {options.EmaDecay}.");
        }

        if (options.Accumulate > 1 && options.LoopCorrectionEvery > 0)
        {
            throw new ArgumentException("the loop correction's exact steps recompute one batch; they do not combine with gradient accumulation.", nameof(options));
        }

        CheckReplicas(model, replicas, options);
        _collectives = collectives ?? new HostCollectives();
        if (replicas.Count > 0)
        {
            // Rank 0's weights everywhere, before any is frozen or narrowed to bf16.
            _collectives.Broadcast([AllParameters(model), .. replicas.Select(AllParameters)]);
        }

        Prepare(model, stage, options);
        foreach (var replica in replicas)
        {
            Prepare(replica, stage, options);
        }

        _optimizer = NewOptimizer(model, options);
        _replicas = replicas.Select(r => (r, NewOptimizer(r, options))).ToList();

        if (HasEma)
        {
            // The average starts at the weights training starts from (a resumed run's come from its checkpoint).
            foreach (var (_, p) in _optimizer.Parameters)
            {
                var ema = Tensor.Empty(model.Backend, p.Shape, MemoryCategory.OptimizerState);
                model.Backend.Scale(p, 1f, ema);
                _ema[p] = ema;
            }
        }
    }

    /// <summary>What the stage does to a model before training: stage 2 freezes the spatial UNet and the text encoder.</summary>
    private static void Prepare(TextToVideo model, Stage stage, TrainOptions options)
    {
        if (stage == Stage.TextToVideo)
        {
            if (model.Topology == Topology.Spatial)
            {
                throw new ArgumentException("stage 2 trains temporal layers: use the serial or parallel topology.");
            }

            model.FreezeForVideo();
            if (options.FrozenTemporal is { Count: > 0 } frozen)
            {
                model.Unet.FreezeTemporal(frozen);
            }

            if (options.FrozenWeights != DType.Float32)
            {
                model.Unet.StoreFrozenWeights(options.FrozenWeights);
                model.Text.StoreFrozenWeights(options.FrozenWeights);
            }
        }
        else if (options.FrozenWeights != DType.Float32)
        {
            throw new ArgumentException($"{options.FrozenWeights.Name()} frozen weights are a stage-2 setting; stage 1 trains every weight.");
        }
        else if (options.FrozenTemporal is { Count: > 0 })
        {
            throw new ArgumentException("frozen temporal layers are a stage-2 setting; stage 1 trains no temporal layer.");
        }
        else if (options.RecomputeTemporal)
        {
            throw new ArgumentException("recomputing the temporal layers is a stage-2 setting; the stage-1 model has none.");
        }

        model.Unet.RecomputeSpatial = options.RecomputeSpatial;
        model.Unet.RecomputeTemporal = options.RecomputeTemporal;
    }

    private static IEnumerable<(string Name, Parameter Parameter)> NamedParameters(TextToVideo model) =>
        model.Unet.NamedParameters().Select(n => ("unet." + n.Name, n.Parameter))
            .Concat(model.Text.NamedParameters().Select(n => ("text." + n.Name, n.Parameter)));

    private static List<Tensor> AllParameters(TextToVideo model) => NamedParameters(model).Select(n => (Tensor)n.Parameter).ToList();

    private static AdamW NewOptimizer(TextToVideo model, TrainOptions options) =>
        new(NamedParameters(model), options.LearningRate, weightDecay: options.WeightDecay, stateType: options.OptimizerState);

    /// <summary>The stage.</summary>
    public Stage Stage { get; }

    /// <summary>The hyper-parameters.</summary>
    public TrainOptions Options { get; }

    /// <summary>Steps completed.</summary>
    public int StepsDone { get; private set; }

    /// <summary>
    /// Whether each training step starts making the next step's batches on a worker thread (host work: clips,
    /// latents, noise) while the device computes, so that the next step finds them ready. A batch depends only on
    /// the step, the seed and the data, so training is the same to the bit either way. Default: on where a device
    /// computes (the CUDA backend), off on the CPU backend, whose threads are busy with the step itself. The data
    /// source's <see cref="IClipSource.Get"/> and the codec's Encode then run on that thread too.
    /// </summary>
    public bool PrefetchBatches { get; set; }

    /// <summary>Clips per training step: <see cref="TrainOptions.Batch"/>, or the model config's when that is 0.</summary>
    public int BatchSize => Options.BatchFor(_model.Config);

    /// <summary>Trainable scalars.</summary>
    public long TrainableParameters => _optimizer.Parameters.Sum(p => p.Parameter.Numel);

    /// <summary>The optimiser (its state goes into checkpoints).</summary>
    public AdamW Optimizer => _optimizer;

    /// <summary>
    /// A host copy of the values of the parameters this trainer updates, by name: what
    /// <see cref="RestoreTrainable"/> puts back (early stopping keeps the best weights of a run this way,
    /// without holding device memory).
    /// </summary>
    public Dictionary<string, float[]> TrainableSnapshot() => _optimizer.Parameters.ToDictionary(p => p.Name, p => p.Parameter.ToArray());

    /// <summary>
    /// Puts back the values of a <see cref="TrainableSnapshot"/> of this trainer. The optimiser's moments and
    /// step count stay as they are: this restores weights to evaluate or sample, not a point to resume from.
    /// </summary>
    public void RestoreTrainable(IReadOnlyDictionary<string, float[]> snapshot)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        foreach (var (name, p) in _optimizer.Parameters)
        {
            if (!snapshot.TryGetValue(name, out var values) || values.Length != p.Numel)
            {
                throw new ArgumentException($"the snapshot does not match this trainer's parameters (at '{name}').", nameof(snapshot));
            }
        }

        foreach (var (name, p) in _optimizer.Parameters)
        {
            p.CopyFrom(snapshot[name]);
        }

        foreach (var (_, optimizer) in _replicas)
        {
            foreach (var (name, p) in optimizer.Parameters)
            {
                p.CopyFrom(snapshot[name]);
            }
        }
    }

    /// <summary>
    /// Restores the optimiser state and step count from a checkpoint taken by <see cref="Save"/>, and the loop
    /// correction's measurements when this trainer corrects in the same mode (otherwise the correction starts
    /// afresh). The options are this trainer's: pass the checkpoint's <see cref="Checkpoint.TrainOptions"/> to
    /// continue exactly.
    /// </summary>
    public void Resume(Checkpoint checkpoint)
    {
        var moments = checkpoint.Optimizer;
        _optimizer.LoadStateDict(moments, checkpoint.OptimizerSteps);
        _replicas.ForEach(r => r.Optimizer.LoadStateDict(moments, checkpoint.OptimizerSteps));
        StepsDone = checkpoint.Step;
        if (HasEma && checkpoint.Ema is { } ema)
        {
            foreach (var (name, p) in _optimizer.Parameters)
            {
                if (ema.TryGetValue(name, out var values))
                {
                    if (values.Length != p.Numel)
                    {
                        throw new InvalidDataException($"the checkpoint's EMA of '{name}' has {values.Length} values; the parameter has {p.Numel}.");
                    }

                    _ema[p].CopyFrom(values);
                }
            }
        }

        ClearLoopCorrection();
        if (checkpoint.LoopCorrection is not { } loop || !LoopCorrected || loop.Mode != Options.LoopCorrectionMode)
        {
            return;
        }

        foreach (var (name, p) in _optimizer.Parameters)
        {
            if (loop.Fits.TryGetValue(name, out var fit))
            {
                _loopScale[p] = new LoopScale { Covariance = fit.Covariance, Variance = fit.Variance };
            }

            if (loop.Bias.TryGetValue(name, out var bias))
            {
                if (bias.Length != p.Numel)
                {
                    throw new InvalidDataException($"the checkpoint's loop correction for '{name}' has {bias.Length} values; the parameter has {p.Numel}.");
                }

                _loopBias[p] = Tensor.FromArray(_model.Backend, bias, p.Shape, MemoryCategory.OptimizerState);
            }
        }

        _loopBiasFolds = loop.Folds;
    }

    /// <summary>
    /// Saves model and optimiser (and this trainer's options and loop correction) so that <see cref="Resume"/>
    /// continues exactly; without the optimiser (<paramref name="weightsOnly"/>) the file is a third of the size
    /// and serves as a starting point.
    /// </summary>
    public void Save(string path, IReadOnlyDictionary<string, string>? extra = null, bool weightsOnly = false) =>
        _model.Save(path, StepsDone, Options.Seed, weightsOnly ? null : _optimizer, extra, Options, weightsOnly ? null : LoopCorrectionState(), EmaSnapshot());

    /// <summary>Runs one training step on the next batch.</summary>
    public StepStats TrainStep()
    {
        if (_emaInPlace)
        {
            throw new InvalidOperationException("a training step with the EMA weights in place (inside EmaWeights()) would train the average.");
        }

        int step = StepsDone + 1;
        List<Batch> batches;
        using (Tape.Kind("Data"))
        {
            batches = BatchesOf(step);
        }

        var backend = _model.Backend;
        foreach (var b in Backends)
        {
            b.Synchronize();
            b.Memory.ResetPeak();
        }

        var clock = Stopwatch.StartNew();
        bool exactStep = LoopCorrected && (step <= Options.LoopCorrectionWarmup || (step - 1) % Options.LoopCorrectionEvery == 0);
        var (loss, saved, (byKind, byOp)) = _replicas.Count > 0 ? DataParallel(batches) : Backprop(batches, _model, _optimizer);
        if (exactStep)
        {
            ExactStepAndFoldBias(batches[0]);
        }

        float norm;
        using (Tape.Kind("Optimizer"))
        {
            if (!exactStep && LoopCorrected)
            {
                CorrectLoopGradients();
            }

            float lr = Options.LearningRateAt(step);
            _optimizer.Lr = lr;
            norm = _optimizer.Step(Options.MaxGradNorm);
            if (_replicas.Count > 0)
            {
                // The same gradients, so the same clip and the same step; rank 0 stepped first, so a gradient that
                // is not finite has stopped every rank before any moved.
                OnEveryReplica(r =>
                {
                    r.Optimizer.Lr = lr;
                    r.Optimizer.Step(Options.MaxGradNorm);
                });
            }

            UpdateEma(step);
        }

        foreach (var b in Backends)
        {
            b.Synchronize();
        }

        double ms = clock.Elapsed.TotalMilliseconds;
        StepsDone = step;
        return new StepStats(step, loss, ms, backend.Memory.Snapshot(), saved, byKind, norm) { SavedByOp = byOp };
    }

    /// <summary>The batches of training step <paramref name="step"/> (one, or one per accumulated micro-batch and rank).</summary>
    private List<Batch> MakeBatches(int step)
    {
        int n = Options.Accumulate * Options.Ranks;
        return Enumerable.Range(0, n).Select(j => MakeBatch(_data, (step - 1) * n + j + 1, Options.Seed, Options.CaptionDropout, BatchSize)).ToList();
    }

    /// <summary>
    /// Step <paramref name="step"/>'s batches: the prefetched ones when they are this step's (a failure to make them
    /// is thrown here, as if made now), else made now; then, with <see cref="PrefetchBatches"/>, starts making the
    /// next step's on a worker thread.
    /// </summary>
    private List<Batch> BatchesOf(int step)
    {
        List<Batch>? batches = null;
        if (TakePrefetch() is { } pending)
        {
            if (pending.Step == step)
            {
                batches = pending.Batches.GetAwaiter().GetResult();
            }
            else
            {
                Settle(pending.Batches); // another step's (the trainer resumed elsewhere): dropped
            }
        }

        batches ??= MakeBatches(step);
        if (PrefetchBatches)
        {
            int next = step + 1;
            _prefetch = (next, Task.Run(() => MakeBatches(next)));
        }

        return batches;
    }

    private (int Step, Task<List<Batch>> Batches)? TakePrefetch()
    {
        var pending = _prefetch;
        _prefetch = null;
        return pending;
    }

    /// <summary>Waits for a prefetch nobody will use, its failure included (it belongs to no step that runs).</summary>
    private static void Settle(Task pending)
    {
        try
        {
            pending.Wait();
        }
        catch (AggregateException)
        {
        }
    }

    /// <summary>
    /// Forward and backward of each batch in turn, their gradients summed in the parameters and scaled by
    /// 1 / count: the gradient of the mean loss over all their clips (batches of one size). Returns the mean loss
    /// and the most any one batch kept for backward.
    /// </summary>
    internal (float Loss, long Saved, SavedBreakdown Breakdown) Accumulated(IReadOnlyList<Batch> batches) => Accumulated(batches, _model, _optimizer);

    private (float Loss, long Saved, SavedBreakdown Breakdown) Accumulated(IReadOnlyList<Batch> batches, TextToVideo model, AdamW optimizer)
    {
        double loss = 0;
        long saved = -1;
        SavedBreakdown breakdown = new([], []);
        foreach (var batch in batches)
        {
            var (l, s, k) = Backprop(batch, model);
            loss += l;
            if (s > saved)
            {
                (saved, breakdown) = (s, k);
            }
        }

        float scale = 1f / batches.Count;
        foreach (var (_, p) in optimizer.Parameters)
        {
            if (p.Grad is { } g)
            {
                model.Backend.Scale(g, scale, g);
            }
        }

        return ((float)(loss / batches.Count), saved, breakdown);
    }

    /// <summary>Forward and backward of one batch, or of several accumulated, on <paramref name="model"/>.</summary>
    private (float Loss, long Saved, SavedBreakdown Breakdown) Backprop(IReadOnlyList<Batch> batches, TextToVideo model, AdamW optimizer) =>
        batches.Count == 1 ? Backprop(batches[0], model) : Accumulated(batches, model, optimizer);

    /// <summary>The bytes a batch kept for backward at its start, by layer kind and by layer kind and op.</summary>
    internal readonly record struct SavedBreakdown(Dictionary<string, long> ByKind, IReadOnlyList<TapeOpStats> ByOp);

    /// <summary>Forward and backward of one batch on <paramref name="model"/> (default: rank 0's); the gradients land in the parameters.</summary>
    internal (float Loss, long Saved, SavedBreakdown Breakdown) Backprop(Batch batch, TextToVideo? model = null)
    {
        model ??= _model;
        var backend = model.Backend;
        using var tape = Tape.Begin();
        tape.SavedActivations = Options.SavedActivations;
        float loss;
        long saved;
        SavedBreakdown breakdown;
        using (var x = Tensor.FromArray(backend, batch.NoisyLatents, batch.Shape))
        using (var target = Tensor.FromArray(backend, batch.Noise, batch.Shape))
        using (var context = EncodeContext(model, batch.Captions, batch.Frames))
        using (var eps = model.Unet.Forward(x, batch.Timesteps, context, batch.Frames))
        using (var lossT = DiffusionLoss(eps, target, batch.Timesteps, batch.Captions.Length, model.Schedule, Options.MinSnrGamma, out var plain))
        using (plain)
        {
            saved = tape.SavedBytes;
            breakdown = new(tape.StatsByKind.ToDictionary(kv => kv.Key, kv => kv.Value.SavedBytes), tape.StatsByOp);
            lossT.Backward(checkFinite: Options.CheckFinite);
            loss = plain.Item();
        }

        return (loss, Math.Max(saved, tape.PeakSavedBytes), breakdown);
    }

    /// <summary>
    /// Mean loss over <paramref name="batches"/> fixed batches of <paramref name="data"/> (same clips,
    /// timesteps and noise for every model given the same seed), without recording anything. The batches are
    /// of the config's size whatever <see cref="TrainOptions.Batch"/> is, so runs with different batches
    /// are validated on the same clips. <paramref name="perItem"/>, when given, receives the loss of every item
    /// (a clip; in stage 1 an image) in order, batch by batch: two models evaluated with the same seed pair up
    /// item by item (<see cref="PairedDifference"/>). A data-parallel trainer spreads the batches over its ranks
    /// (the same losses as rank 0 alone would give), except while <see cref="EmaWeights"/> has rank 0's average in place.
    /// </summary>
    public float Evaluate(IClipSource data, int batches, int seed, IList<double>? perItem = null)
    {
        Batch Made(int i) => MakeBatch(data, i + 1, seed ^ 0x2545F491, captionDropout: 0);
        var results = new (double Loss, double[]? Items)[batches];
        bool items = perItem is not null;
        if (_replicas.Count == 0 || _emaInPlace)
        {
            for (int i = 0; i < batches; i++)
            {
                results[i] = EvaluateBatch(_model, Made(i), items);
            }
        }
        else
        {
            // The batches are made here (rank 0's data source and codec); with replicas holding the same weights (not
            // while the EMA is in place on rank 0 alone), rank r evaluates batches r, r + R, ... at the same time.
            var made = Enumerable.Range(0, batches).Select(Made).ToList();
            int ranks = _replicas.Count + 1;
            OnEveryRank(rank =>
            {
                var model = rank == 0 ? _model : _replicas[rank - 1].Model;
                for (int i = rank; i < batches; i += ranks)
                {
                    results[i] = EvaluateBatch(model, made[i], items);
                }
            });
        }

        double total = 0;
        foreach (var (loss, itemLosses) in results)
        {
            total += loss;
            foreach (var l in itemLosses ?? [])
            {
                perItem!.Add(l);
            }
        }

        return (float)(total / batches);
    }

    /// <summary>One validation batch on <paramref name="model"/>: its loss, and with <paramref name="items"/> each item's.</summary>
    private static (double Loss, double[]? Items) EvaluateBatch(TextToVideo model, Batch batch, bool items)
    {
        using var noGrad = Tape.NoGrad();
        using var x = Tensor.FromArray(model.Backend, batch.NoisyLatents, batch.Shape);
        using var target = Tensor.FromArray(model.Backend, batch.Noise, batch.Shape);
        using var context = model.EncodeText(batch.Captions, batch.Frames);
        using var eps = model.Unet.Forward(x, batch.Timesteps, context, batch.Frames);
        using var loss = Ops.MseLoss(eps, target);
        double total = loss.Item();
        if (!items)
        {
            return (total, null);
        }

        var perItem = new double[batch.Captions.Length];
        for (int k = 0; k < perItem.Length; k++)
        {
            using var e = Ops.Narrow(eps, 0, k * batch.Frames, batch.Frames);
            using var t = Ops.Narrow(target, 0, k * batch.Frames, batch.Frames);
            using var l = Ops.MseLoss(e, t);
            perItem[k] = l.Item();
        }

        return (total, perItem);
    }

    /// <summary>
    /// The training loss of predicted noise <paramref name="eps"/> against <paramref name="target"/>, both
    /// [items * k, ...] with <paramref name="items"/> items of k images sharing one timestep: the plain MSE
    /// when <paramref name="minSnrGamma"/> is 0, else sum_i w_i MSE_i / items with w_i = min(SNR, gamma) / SNR
    /// at item i's timestep. <paramref name="plain"/> is the unweighted MSE (no tape), for reporting.
    /// </summary>
    internal static Tensor DiffusionLoss(Tensor eps, Tensor target, IReadOnlyList<int> timesteps, int items, NoiseSchedule schedule, float minSnrGamma, out Tensor plain)
    {
        if (minSnrGamma < 0 || float.IsNaN(minSnrGamma))
        {
            throw new ArgumentOutOfRangeException(nameof(minSnrGamma), $"min-SNR gamma must be 0 (off) or positive, got {minSnrGamma}.");
        }

        if (minSnrGamma == 0)
        {
            var mse = Ops.MseLoss(eps, target);
            plain = Ops.Detach(mse);
            return mse;
        }

        int per = eps.Dim(0) / items;
        Tensor? total = null;
        try
        {
            for (int i = 0; i < items; i++)
            {
                double ab = schedule.AlphasCumprod[timesteps[i * per]];
                double snr = ab / (1 - ab);
                float w = (float)(Math.Min(snr, minSnrGamma) / snr / items);
                using var e = Ops.Narrow(eps, 0, i * per, per);
                using var t = Ops.Narrow(target, 0, i * per, per);
                using var l = Ops.MseLoss(e, t);
                var next = total is null ? Ops.Scale(l, w) : Ops.Combine(total, l, 1f, w);
                total?.Dispose();
                total = next;
            }

            using (Tape.NoGrad())
            {
                plain = Ops.MseLoss(eps, target);
            }

            var result = total!;
            total = null;
            return result;
        }
        finally
        {
            total?.Dispose();
        }
    }

    /// <summary>Releases the optimiser state (after any batch still being made for a next step).</summary>
    public void Dispose()
    {
        if (TakePrefetch() is { } pending)
        {
            Settle(pending.Batches);
        }

        ClearLoopCorrection();
        foreach (var t in _ema.Values)
        {
            t.Dispose();
        }

        _ema.Clear();
        _optimizer.Dispose();
        _replicas.ForEach(r => r.Optimizer.Dispose());
    }

    private Tensor EncodeContext(TextToVideo model, IReadOnlyList<string> captions, int frames)
    {
        // Stage 2: the frozen text encoder is inference-only in both topologies.
        if (Stage == Stage.TextToVideo)
        {
            using var noGrad = Tape.NoGrad();
            return model.EncodeText(captions, frames);
        }

        return model.EncodeText(captions, frames);
    }

    /// <summary>
    /// The batch of step <paramref name="step"/> of <paramref name="clips"/> clips (null: the config's batch):
    /// stage 1 takes clips x Frames single frames of different clips (each its own caption and timestep);
    /// stage 2 takes whole clips (one timestep per clip).
    /// </summary>
    internal Batch MakeBatch(IClipSource data, int step, int seed, float captionDropout, int? clips = null)
    {
        var config = _model.Config;
        var rng = new Random(StepSeed(seed, step));
        bool video = Stage == Stage.TextToVideo;
        int batch = clips ?? config.Batch;
        int items = video ? batch : batch * config.Frames;
        int frames = video ? config.Frames : 1;
        int c = config.LatentChannels, h = config.LatentHeight, w = config.LatentWidth;
        int imageSize = c * h * w;
        var latents = new float[items * frames * imageSize];
        var captions = new string[items];
        var timesteps = new int[items * frames];
        for (int i = 0; i < items; i++)
        {
            var clip = data.Get(rng.Next(data.Count));
            if (clip.FrameCount < frames || clip.Height != config.Height || clip.Width != config.Width)
            {
                throw new InvalidDataException($"clip '{clip.Caption}' is {clip.FrameCount}x{clip.Height}x{clip.Width}; the {config.Name} config needs {frames}x{config.Height}x{config.Width}.");
            }

            var all = _model.Codec.Encode(clip);
            int first = video ? 0 : rng.Next(clip.FrameCount);
            Array.Copy(all, first * imageSize, latents, i * frames * imageSize, frames * imageSize);
            captions[i] = rng.NextDouble() < captionDropout ? "" : clip.Caption;
            int t = rng.Next(_model.Schedule.Steps);
            Array.Fill(timesteps, t, i * frames, frames);
        }

        var noise = NoiseSchedule.ClipNoise(rng, items, frames, imageSize, video ? config.FrameNoiseCorrelation : 0f);
        var noisy = _model.Schedule.AddNoise(latents, noise, timesteps, imageSize);
        return new Batch(noisy, noise, timesteps, captions, frames, new Shape(items * frames, c, h, w));
    }

    /// <summary>
    /// The seed of one step's batch: a fixed mix of the run's seed and the step (HashCode.Combine would
    /// differ between processes and break repeatable runs).
    /// </summary>
    internal static int StepSeed(int seed, int step)
    {
        // SplitMix64 finaliser over (seed, step).
        ulong z = ((ulong)(uint)seed << 32 | (uint)step) + 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (int)((z ^ (z >> 31)) & 0x7FFFFFFF);
    }

    /// <summary>One training batch on the host.</summary>
    internal sealed record Batch(float[] NoisyLatents, float[] Noise, int[] Timesteps, string[] Captions, int Frames, Shape Shape);
}
