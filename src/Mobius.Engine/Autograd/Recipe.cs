namespace Mobius.Engine.Autograd;

/// <summary>
/// How to recompute a tensor from others with a cheap op (a norm, an activation, a layout change).
/// When a node must keep an input for backward and that input can be recomputed from memory the tape
/// holds anyway (tensors other nodes saved, or weights), the node keeps the recipe instead of the
/// tensor: for example a trainable linear layer after a layer norm keeps nothing beyond what the norm
/// already keeps. Both topologies get this saving alike.
/// </summary>
internal sealed class Recipe(Func<Tensor[], Tensor> compute, params Tensor[] inputs)
{
    public Func<Tensor[], Tensor> Compute { get; } = compute;

    public Source[] Sources { get; } = inputs.Select(Source.Of).ToArray();

    /// <summary>A tensor a recipe reads: where it lives (not retained) and how to recompute it in turn.</summary>
    internal sealed record Source(Storage Storage, long Offset, Shape Shape, DType DType, Recipe? Recipe)
    {
        public static Source Of(Tensor t) => new(t.Storage, t.Offset, t.Shape, t.DType, t.Recipe);

        /// <summary>Its memory is kept anyway: saved by a node, or a weight.</summary>
        public bool HeldExactly => !Storage.IsReleased && (Storage.IsSaved || Storage.Category == MemoryCategory.Weights);

        /// <summary>Its memory is kept anyway, as it is (<see cref="HeldExactly"/>) or as a node's narrower copy of <paramref name="kept"/> (the tape's <see cref="Tape.SavedActivations"/>).</summary>
        public bool Held(DType kept) => HeldExactly || (kept != DType.Float32 && Storage.NarrowedCopy(Offset, Shape.Numel, kept) is not null);

        /// <summary>It can be had in backward without saving anything new.</summary>
        public bool Recomputable(DType kept) => Held(kept) || (Recipe is not null && Recipe.Sources.All(s => s.Recomputable(kept)));
    }
}

/// <summary>A node's handle on an input it needs in backward: the tensor itself, or a recipe over held tensors.</summary>
internal sealed class SavedInput
{
    private readonly Tensor? _tensor;
    private readonly Recipe? _recipe;
    private readonly SavedInput[]? _inputs;

    public SavedInput(Tensor tensor) => _tensor = tensor;

    public SavedInput(Recipe recipe, SavedInput[] inputs)
    {
        _recipe = recipe;
        _inputs = inputs;
    }

    /// <summary>True when backward will recompute the value rather than read a kept copy.</summary>
    public bool IsRecomputed => _recipe is not null;

    /// <summary>The value, as a new handle the caller disposes (recomputed without recording when needed).</summary>
    public Tensor Get()
    {
        if (_tensor is not null)
        {
            return _tensor.View(0, _tensor.Shape);
        }

        var args = _inputs!.Select(i => i.Get()).ToArray();
        try
        {
            using var noGrad = Tape.NoGrad();
            return _recipe!.Compute(args);
        }
        finally
        {
            foreach (var a in args)
            {
                a.Dispose();
            }
        }
    }
}
