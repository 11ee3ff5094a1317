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
        if (!self.Held && t.Recipe is { } recipe && recipe.Sources.All(s => s.Recomputable))
        {
            return new SavedInput(recipe, recipe.Sources.Select(SaveSource).ToArray());
        }

        return new SavedInput(Save(t));
    }

    private SavedInput SaveSource(Recipe.Source s) =>
        s.Held ? new SavedInput(Keep(Tensor.Retained(s.Storage, s.Offset, s.Shape, s.DType)))
               : new SavedInput(s.Recipe!, s.Recipe!.Sources.Select(SaveSource).ToArray());

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

        return _backward(gradOutput);
    }

    /// <summary>Releases everything saved; the node can no longer run backward.</summary>
    public void Release()
    {
        foreach (var t in _saved)
        {
            var storage = t.Storage;
            if (storage.UnmarkSaved())
            {
                _tape.OnUnsaved(storage.SavedKind ?? Kind, storage.Bytes);
                storage.SavedKind = null;
            }

            t.Dispose();
        }

        _saved.Clear();
        _backward = null;
        Output.Discard();
        Consumed = true;
    }
}
