namespace Mobius.Engine.Autograd;

/// <summary>Computes the gradients of a node's inputs from the gradient of its output.</summary>
/// <param name="gradOutput">Gradient of the node's output (borrowed: do not dispose).</param>
/// <returns>One gradient per input, null where the input needs none; the tape takes ownership.</returns>
internal delegate Tensor?[] BackwardFn(Tensor gradOutput);

/// <summary>
/// One recorded op on the <see cref="Tape"/>: the slots of its inputs (null where an input needs no
/// gradient), the slot of its output, the tensors it saved for backward and the backward function.
/// </summary>
internal sealed class Node
{
    private readonly List<Tensor> _saved = new();
    private readonly HashSet<Tensor> _narrowed = new(ReferenceEqualityComparer.Instance);
    private readonly HashSet<Tensor> _widened = new(ReferenceEqualityComparer.Instance);
    private readonly Tape _tape;
    private BackwardFn? _backward;

    internal Node(Tape tape, string op, string kind, GradSlot?[] inputs, string inputShapes)
    {
        _tape = tape;
        Op = op;
        Kind = kind;
        Inputs = inputs;
        InputShapes = inputShapes;
        Output = new GradSlot(this);
    }

    /// <summary>The tape this node is recorded on.</summary>
    public Tape Tape => _tape;

    /// <summary>Op name ("conv2d").</summary>
    public string Op { get; }

    /// <summary>Layer kind the op was recorded under ("ResBlock2D").</summary>
    public string Kind { get; }

    /// <summary>Input shapes, for error messages.</summary>
    public string InputShapes { get; }

    public GradSlot?[] Inputs { get; }

    public GradSlot Output { get; }

    /// <summary>True once backward has run through this node or the node was released.</summary>
    public bool Consumed { get; private set; }

    /// <summary>Whether input <paramref name="i"/> needs a gradient.</summary>
    public bool NeedsGrad(int i) => Inputs[i] is not null;

    /// <summary>
    /// Takes the gradient input <paramref name="i"/> has collected so far from its other consumers (backward runs them
    /// first: a residual's skip path), so that this node's backward can add it into its own gradient in the same pass
    /// and hand back the sum; null for a leaf (whose gradient collects in its <see cref="Tensor.Grad"/>), an input that
    /// needs no gradient, or one with nothing collected yet. The handle is the caller's to dispose.
    /// </summary>
    public Tensor? TakePendingGradient(int i) => Inputs[i] is { IsLeaf: false } slot ? slot.Take() : null;

    /// <summary>Bytes of saved activations this node accounts for (shared blocks are counted by their first saver).</summary>
    public long SavedBytes { get; private set; }

    /// <summary>
    /// Keeps <paramref name="t"/> alive for backward and returns the handle to use there. Parameters stay
    /// accounted as weights; anything else becomes a saved activation until the node releases it.
    /// </summary>
    public Tensor Save(Tensor t)
    {
        var handle = t.View(0, t.Shape);
        handle.Name = t.Name;
        return Keep(handle);
    }

    /// <summary>
    /// Keeps an input a backward needs at the lowest cost: when <paramref name="t"/> can be recomputed
    /// from memory the tape holds anyway (see <see cref="Recipe"/>), keeps the recipe; otherwise the tensor.
    /// </summary>
    public SavedInput SaveInput(Tensor t)
    {
        var self = Recipe.Source.Of(t);
        var kept = _tape.SavedActivations;
        if (!self.Held(kept) && t.Recipe is { } recipe && recipe.Sources.All(s => s.Recomputable(kept)))
        {
            return new SavedInput(recipe, recipe.Sources.Select(SaveSource).ToArray());
        }

        return new SavedInput(SaveActivation(t));
    }

    /// <summary>True when <see cref="SaveActivation"/> keeps narrower copies (bf16 or int8 blocks: <see cref="Tape.SavedActivations"/>).</summary>
    public bool NarrowsActivations => _tape.SavedActivations != DType.Float32;

    /// <summary>
    /// Keeps an activation for backward as <see cref="Save"/> does, or, when the tape keeps activations narrower
    /// (<see cref="Tape.SavedActivations"/>: bf16 or int8 blocks), a copy of that type, shared with every other node that
    /// keeps the same tensor and widened back to fp32 while this node runs backward. Weights, and tensors another node
    /// keeps exactly anyway, are kept as they are.
    /// </summary>
    public Tensor SaveActivation(Tensor t)
    {
        var storage = t.Storage;
        var kept = _tape.SavedActivations;
        if (kept == DType.Float32 || t.DType != DType.Float32 || storage.Category == MemoryCategory.Weights || storage.IsSaved)
        {
            return Save(t);
        }

        if (storage.NarrowedCopy(t.Offset, t.Numel, kept) is { } copy)
        {
            return KeepNarrowed(Tensor.Retained(copy, 0, t.Shape, kept), t.Name);
        }

        var narrow = Tensor.Empty(t.Backend, t.Shape, MemoryCategory.Temporaries, kept);
        t.Backend.Cast(t, narrow);
        storage.SetNarrowedCopy(t.Offset, t.Numel, kept, narrow.Storage);
        return KeepNarrowed(narrow, t.Name);
    }

    private SavedInput SaveSource(Recipe.Source s)
    {
        var kept = _tape.SavedActivations;
        if (!s.Held(kept))
        {
            return new SavedInput(s.Recipe!, s.Recipe!.Sources.Select(SaveSource).ToArray());
        }

        if (s.HeldExactly)
        {
            return new SavedInput(Keep(Tensor.Retained(s.Storage, s.Offset, s.Shape, s.DType)));
        }

        var copy = s.Storage.NarrowedCopy(s.Offset, s.Shape.Numel, kept)!;
        return new SavedInput(KeepNarrowed(Tensor.Retained(copy, 0, s.Shape, kept), null));
    }

    private Tensor KeepNarrowed(Tensor handle, string? name)
    {
        handle.Name = name;
        _narrowed.Add(handle);
        return Keep(handle);
    }

    private Tensor Keep(Tensor handle)
    {
        _saved.Add(handle);
        if (handle.Storage.MarkSaved())
        {
            handle.Storage.SavedKind = Kind;
            SavedBytes += handle.Storage.Bytes;
            _tape.OnSaved(Kind, handle.Storage.Bytes);
        }

        return handle;
    }

    /// <summary>Sets the backward function and links <paramref name="output"/> to this node.</summary>
    public void Finish(Tensor output, BackwardFn backward)
    {
        _backward = backward;
        output.GradSlot = Output;
        _tape.Record(this);
    }

    /// <summary>Runs backward for a gradient of the output; the caller owns the returned gradients.</summary>
    public Tensor?[] RunBackward(Tensor gradOutput)
    {
        if (_backward is null)
        {
            throw new AutogradException($"{Op}: node was recorded without a backward function.");
        }

        // Activations kept narrower (bf16, int8 blocks) are read in fp32: each handle moves onto a widened copy for as long as this
        // node lives (its narrow block stays with the other nodes that keep it, and goes when the last one lets go).
        foreach (var handle in _narrowed)
        {
            var narrow = handle.Storage;
            if (narrow.UnmarkSaved())
            {
                _tape.OnUnsaved(narrow.SavedKind ?? Kind, narrow.Bytes);
                narrow.SavedKind = null;
            }

            handle.Recast(DType.Float32, MemoryCategory.Temporaries);
            _widened.Add(handle);
        }

        return _backward(gradOutput);
    }

    /// <summary>Releases everything saved; the node can no longer run backward.</summary>
    public void Release()
    {
        foreach (var t in _saved)
        {
            var storage = t.Storage;
            if (!_widened.Contains(t) && storage.UnmarkSaved())
            {
                _tape.OnUnsaved(storage.SavedKind ?? Kind, storage.Bytes);
                storage.SavedKind = null;
            }

            t.Dispose();
        }

        _saved.Clear();
        _narrowed.Clear();
        _widened.Clear();
        _backward = null;
        Output.Discard();
        Consumed = true;
    }
}
