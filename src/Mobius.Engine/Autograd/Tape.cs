using System.Text.Json.Serialization;

namespace Mobius.Engine.Autograd;

/// <summary>
/// The autograd tape: the ops recorded since the last backward, in order, each with only what its
/// backward needs. Ops are recorded when gradients are enabled and one of their inputs requires a
/// gradient; a tensor that needs none leaves nothing behind. <see cref="Backward"/> walks the tape in
/// reverse and frees each node's saved tensors as soon as the node has run.
/// Each thread has a current tape (<see cref="Current"/>); <see cref="Begin"/> opens a private one.
/// </summary>
public sealed class Tape : IDisposable
{
    [ThreadStatic]
    private static Tape? _current;

    [ThreadStatic]
    private static int _noGradDepth;

    [ThreadStatic]
    private static Stack<string>? _kinds;

    private readonly List<Node> _nodes = new();
    private readonly Dictionary<string, KindStats> _stats = new();
    private readonly Tape? _previous;
    private bool _disposed;

    private Tape(Tape? previous) => _previous = previous;

    /// <summary>The tape ops record into on this thread.</summary>
    public static Tape Current => _current ??= new Tape(null);

    /// <summary>False inside a <see cref="NoGrad"/> scope.</summary>
    public static bool GradEnabled => _noGradDepth == 0;

    /// <summary>The layer kind new nodes are attributed to.</summary>
    public static string CurrentKind => _kinds is { Count: > 0 } k ? k.Peek() : "Other";

    /// <summary>
    /// The element type of the activations this tape keeps for backward where an op allows it (inputs kept for weight
    /// gradients, activation and GEGLU inputs, norm inputs, kept centred). <see cref="DType.BFloat16"/> keeps a bf16
    /// copy (half the bytes) instead of the fp32 tensor, <see cref="DType.Int8Blocks"/> an int8 copy with a scale per
    /// block of 128 elements (1.03 bytes an element), and the node widens it back while it runs backward: forward is
    /// unchanged, and backward reads each such activation rounded to that type. Attention keeps only q, k and v then, and
    /// its backward recomputes the softmax from them. Norm statistics, losses and checkpointed regions' inputs stay
    /// exact. Default fp32.
    /// </summary>
    public DType SavedActivations
    {
        get => _savedActivations;
        set => _savedActivations = value is DType.Float32 or DType.BFloat16 or DType.Int8Blocks
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "saved activations are kept in fp32, bf16 or int8 blocks.");
    }

    private DType _savedActivations = DType.Float32;

    /// <summary>Opens a new tape that becomes current until disposed (then the previous one is current again).</summary>
    public static Tape Begin()
    {
        var tape = new Tape(_current);
        _current = tape;
        return tape;
    }

    /// <summary>Disables recording until the returned scope is disposed (PyTorch's no_grad).</summary>
    public static Scope NoGrad()
    {
        _noGradDepth++;
        return new Scope(static () => _noGradDepth--);
    }

    /// <summary>
    /// Turns recording back on inside <see cref="NoGrad"/> scopes until the returned scope is disposed (a
    /// recomputed region's backward: <see cref="Ops.Recompute"/>).
    /// </summary>
    internal static Scope EnableGrad()
    {
        int depth = _noGradDepth;
        _noGradDepth = 0;
        return new Scope(() => _noGradDepth = depth);
    }

    /// <summary>Attributes nodes recorded inside the scope to a layer kind ("TemporalConv").</summary>
    public static Scope Kind(string kind)
    {
        _kinds ??= new Stack<string>();
        Profiler?.Switch(CurrentKind);
        _kinds.Push(kind);
        return new Scope(static () =>
        {
            Profiler?.Switch(CurrentKind);
            _kinds!.Pop();
        });
    }

    /// <summary>
    /// When set, wall time on this thread is attributed to the innermost layer kind: forward time between
    /// <see cref="Kind"/> scopes, backward time per node. A device backend queues work asynchronously, so give
    /// the profiler its Synchronize (every boundary then waits for the device, which slows the step).
    /// `mobius compare --profile N` prints it.
    /// </summary>
    public static KindProfiler? Profiler
    {
        get => _profiler;
        set => _profiler = value;
    }

    [ThreadStatic]
    private static KindProfiler? _profiler;

    /// <summary>Nodes waiting for backward.</summary>
    public int NodeCount => _nodes.Count(n => !n.Consumed);

    /// <summary>Bytes of activations held for backward now.</summary>
    public long SavedBytes => _stats.Values.Sum(s => s.SavedBytes);

    /// <summary>Highest <see cref="SavedBytes"/> since the tape was created or <see cref="ResetPeak"/>.</summary>
    public long PeakSavedBytes { get; private set; }

    /// <summary>Live nodes and saved bytes by layer kind.</summary>
    public IReadOnlyDictionary<string, TapeKindStats> StatsByKind =>
        _stats.Where(kv => kv.Value.Nodes > 0 || kv.Value.SavedBytes > 0)
              .ToDictionary(kv => kv.Key, kv => new TapeKindStats(kv.Value.Nodes, kv.Value.SavedBytes, kv.Value.PeakSavedBytes));

    /// <summary>
    /// The bytes kept for backward now by layer kind and op ("TemporalTransformer", "geglu"), largest first: what
    /// <see cref="SavedBytes"/> is made of, each block counted once, by the node that kept it first. `mobius plan
    /// --by-op` prints it for both topologies.
    /// </summary>
    public IReadOnlyList<TapeOpStats> StatsByOp =>
        _nodes.Where(n => !n.Consumed && n.SavedBytes > 0)
              .GroupBy(n => (n.Kind, n.Op))
              .Select(g => new TapeOpStats(g.Key.Kind, g.Key.Op, g.Count(), g.Sum(n => n.SavedBytes)))
              .OrderByDescending(s => s.SavedBytes).ThenBy(s => s.Kind, StringComparer.Ordinal).ThenBy(s => s.Op, StringComparer.Ordinal)
              .ToList();

    /// <summary>Restarts the peak-saved-bytes window.</summary>
    public void ResetPeak()
    {
        PeakSavedBytes = SavedBytes;
        foreach (var s in _stats.Values)
        {
            s.PeakSavedBytes = s.SavedBytes;
        }
    }

    /// <summary>
    /// Back-propagates from <paramref name="loss"/> (seeded with <paramref name="gradient"/>, or 1 for a
    /// one-element loss) through every recorded node, accumulating into the gradients of leaves, then
    /// releases the whole tape. With <paramref name="checkFinite"/> a NaN or infinite loss throws
    /// <see cref="NonFiniteException"/> before anything runs.
    /// </summary>
    public void Backward(Tensor loss, Tensor? gradient = null, bool checkFinite = false)
    {
        ArgumentNullException.ThrowIfNull(loss);
        var slot = loss.GradSlot ?? throw new AutogradException(
            $"Backward: {loss.Describe()} does not require a gradient (no input of the ops that made it requires one, or it was made under NoGrad).");
        if (slot.Producer is { Consumed: true })
        {
            throw new AutogradException(
                $"Backward: the graph of {loss.Describe()} (made by {slot.Producer.Op}) has already been run backward or released; run forward again.");
        }

        if (slot.Producer is not null && !_nodes.Contains(slot.Producer))
        {
            throw new AutogradException($"Backward: {loss.Describe()} was recorded on another tape.");
        }

        if (checkFinite)
        {
            float value = loss.Numel == 1 ? loss.Item() : float.NaN;
            if (!float.IsFinite(value))
            {
                string op = slot.Producer?.Op ?? "leaf";
                string shapes = slot.Producer?.InputShapes ?? loss.Shape.ToString();
                throw new NonFiniteException(op, $"loss is {value} (inputs {shapes}).");
            }
        }

        Tensor seed;
        if (gradient is null)
        {
            if (loss.Numel != 1)
            {
                throw new AutogradException($"Backward: {loss.Describe()} has more than one element; pass the gradient to seed it with.");
            }

            seed = Tensor.Full(loss.Backend, loss.Shape, 1f);
        }
        else
        {
            if (gradient.Shape != loss.Shape)
            {
                throw new ShapeMismatchException("Backward", $"gradient {gradient.Shape} for loss {loss.Shape}.");
            }

            seed = gradient.View(0, gradient.Shape);
        }

        slot.Accumulate(seed);
        try
        {
            for (int i = _nodes.Count - 1; i >= 0; i--)
            {
                var node = _nodes[i];
                if (node.Consumed)
                {
                    continue;
                }

                using (var g = node.Output.Take())
                {
                    if (g is not null)
                    {
                        long started = Profiler?.Start() ?? 0;
                        var grads = node.RunBackward(g);
                        Profiler?.AddBackward(node.Kind, started);
                        for (int j = 0; j < grads.Length; j++)
                        {
                            if (grads[j] is { } gj)
                            {
                                if (node.Inputs[j] is { } input)
                                {
                                    input.Accumulate(gj);
                                }
                                else
                                {
                                    gj.Dispose();
                                }
                            }
                        }
                    }
                }

                Release(node);
            }
        }
        finally
        {
            Clear();
        }
    }

    /// <summary>Releases every node and what it saved, without running backward.</summary>
    public void Clear()
    {
        foreach (var node in _nodes)
        {
            if (!node.Consumed)
            {
                Release(node);
            }
        }

        _nodes.Clear();
    }

    /// <summary>Releases the tape; a tape made by <see cref="Begin"/> restores the previous current tape.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Clear();
        if (ReferenceEquals(_current, this))
        {
            _current = _previous;
        }
    }

    /// <summary>
    /// Starts recording an op whose inputs are <paramref name="inputs"/>; returns null when nothing needs
    /// recording (gradients disabled, or no input requires a gradient). Null inputs are ignored.
    /// </summary>
    internal static Node? Record(string op, params Tensor?[] inputs)
    {
        if (!GradEnabled)
        {
            return null;
        }

        bool any = false;
        var slots = new GradSlot?[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            slots[i] = inputs[i]?.GradSlot;
            any |= slots[i] is not null;
        }

        if (!any)
        {
            return null;
        }

        string shapes = string.Join(", ", inputs.Where(t => t is not null).Select(t => t!.Shape.ToString()));
        return new Node(Current, op, CurrentKind, slots, shapes);
    }

    internal void Record(Node node)
    {
        _nodes.Add(node);
        Stats(node.Kind).Nodes++;
    }

    internal void OnSaved(string kind, long bytes)
    {
        var s = Stats(kind);
        s.SavedBytes += bytes;
        s.PeakSavedBytes = Math.Max(s.PeakSavedBytes, s.SavedBytes);
        PeakSavedBytes = Math.Max(PeakSavedBytes, SavedBytes);
    }

    internal void OnUnsaved(string kind, long bytes) => Stats(kind).SavedBytes -= bytes;

    private void Release(Node node)
    {
        node.Release();
        Stats(node.Kind).Nodes--;
    }

    private KindStats Stats(string kind)
    {
        if (!_stats.TryGetValue(kind, out var s))
        {
            s = new KindStats();
            _stats[kind] = s;
        }

        return s;
    }

    private sealed class KindStats
    {
        public int Nodes;
        public long SavedBytes;
        public long PeakSavedBytes;
    }

    /// <summary>Restores state when disposed; returned by <see cref="NoGrad"/> and <see cref="Kind"/>.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly Action? _onDispose;

        internal Scope(Action onDispose) => _onDispose = onDispose;

        /// <inheritdoc />
        public void Dispose() => _onDispose?.Invoke();
    }
}

/// <summary>Tape statistics of one layer kind.</summary>
/// <param name="Nodes">Nodes waiting for backward.</param>
/// <param name="SavedBytes">Bytes of activations held now.</param>
/// <param name="PeakSavedBytes">Highest saved bytes since the last peak reset.</param>
public sealed record TapeKindStats(int Nodes, long SavedBytes, long PeakSavedBytes);

/// <summary>Bytes one op keeps for backward within one layer kind (<see cref="Tape.StatsByOp"/>).</summary>
/// <param name="Kind">Layer kind the nodes were recorded under ("TemporalTransformer").</param>
/// <param name="Op">Op name ("geglu").</param>
/// <param name="Nodes">Nodes of this op and kind that keep anything.</param>
/// <param name="SavedBytes">Bytes they keep, each block counted once.</param>
public sealed record TapeOpStats(
    [property: JsonPropertyName("kind")] string Kind,
    [property: JsonPropertyName("op")] string Op,
    [property: JsonPropertyName("nodes")] int Nodes,
    [property: JsonPropertyName("bytes")] long SavedBytes);

/// <summary>
/// Forward and backward wall time by layer kind (see <see cref="Tape.Profiler"/>). Time outside any kind
/// scope (the loss, uploads) counts as the forward time of "Other"; the trainer names its batch making "Data" and its optimizer step "Optimizer".
/// </summary>
/// <param name="synchronize">Waits for queued device work before each reading (a device backend's
/// Synchronize); null on the CPU.</param>
public sealed class KindProfiler(Action? synchronize = null)
{
    private readonly Dictionary<string, (double Forward, double Backward)> _ms = new();
    private long _since = System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>Milliseconds by kind.</summary>
    public IReadOnlyDictionary<string, (double Forward, double Backward)> Milliseconds => _ms;

    /// <summary>Forgets everything measured so far and starts timing now.</summary>
    public void Reset()
    {
        _ms.Clear();
        _since = Now();
    }

    private long Now()
    {
        synchronize?.Invoke();
        return System.Diagnostics.Stopwatch.GetTimestamp();
    }

    /// <summary>Charges the time since the last reading to the current kind (call at the end of a measurement).</summary>
    public void Flush() => Switch(Tape.CurrentKind);

    /// <summary>Closes the forward interval of <paramref name="kind"/> and starts the next one.</summary>
    internal void Switch(string kind)
    {
        long now = Now();
        var (f, b) = _ms.GetValueOrDefault(kind);
        _ms[kind] = (f + System.Diagnostics.Stopwatch.GetElapsedTime(_since, now).TotalMilliseconds, b);
        _since = now;
    }

    /// <summary>The start of a backward node: what was queued before it is charged to the interval open until now.</summary>
    internal long Start()
    {
        Switch(Tape.CurrentKind);
        return _since;
    }

    internal void AddBackward(string kind, long started)
    {
        long now = Now();
        var (f, b) = _ms.GetValueOrDefault(kind);
        _ms[kind] = (f, b + System.Diagnostics.Stopwatch.GetElapsedTime(started, now).TotalMilliseconds);
        _since = now;
    }
}
