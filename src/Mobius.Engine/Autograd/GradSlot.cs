namespace Mobius.Engine.Autograd;

/// <summary>
/// Where the gradient of one tensor collects during backward. A leaf's slot writes into the leaf's
/// <see cref="Tensor.Grad"/> (accounted as gradients); an op output's slot holds the pending gradient
/// until the node that produced the tensor consumes it.
/// </summary>
internal sealed class GradSlot
{
    private Tensor? _pending;

    /// <summary>A slot for a leaf tensor.</summary>
    public GradSlot(Tensor leaf) => Leaf = leaf;

    /// <summary>A slot for the output of <paramref name="producer"/>.</summary>
    public GradSlot(Node producer) => Producer = producer;

    public Tensor? Leaf { get; }

    public Node? Producer { get; }

    public bool IsLeaf => Leaf is not null;

    /// <summary>Adds <paramref name="grad"/> into this slot, taking ownership of the handle.</summary>
    public void Accumulate(Tensor grad)
    {
        if (Leaf is not null)
        {
            AccumulateLeaf(Leaf, grad);
            return;
        }

        if (_pending is null)
        {
            _pending = grad;
            return;
        }

        if (_pending.Storage.RefCount == 1)
        {
            _pending.Backend.Add(_pending, grad, _pending);
            grad.Dispose();
            return;
        }

        // The pending gradient shares memory with another tensor: never write through an alias.
        var sum = Tensor.Empty(grad.Backend, grad.Shape);
        grad.Backend.Add(_pending, grad, sum);
        _pending.Dispose();
        grad.Dispose();
        _pending = sum;
    }

    /// <summary>Removes and returns the pending gradient (null when nothing reached this slot).</summary>
    public Tensor? Take()
    {
        var g = _pending;
        _pending = null;
        return g;
    }

    /// <summary>Drops a pending gradient that will never be consumed.</summary>
    public void Discard()
    {
        _pending?.Dispose();
        _pending = null;
    }

    private static void AccumulateLeaf(Tensor leaf, Tensor grad)
    {
        if (leaf.Grad is null)
        {
            bool whole = grad.Offset == 0 && grad.Storage.Bytes == grad.Bytes && grad.Storage.RefCount == 1;
            if (whole && grad.Storage.Category == MemoryCategory.Temporaries)
            {
                grad.Storage.Reclassify(MemoryCategory.Gradients);
                leaf.Grad = grad;
                return;
            }

            var copy = Tensor.Empty(grad.Backend, leaf.Shape, MemoryCategory.Gradients);
            grad.Backend.Scale(grad, 1f, copy);
            leaf.Grad = copy;
            grad.Dispose();
            return;
        }

        leaf.Backend.Add(leaf.Grad, grad, leaf.Grad);
        grad.Dispose();
    }
}
