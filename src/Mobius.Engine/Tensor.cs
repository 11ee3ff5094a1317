using Mobius.Engine.Autograd;

namespace Mobius.Engine;

/// <summary>
/// A dense, contiguous, row-major tensor: a shape, an element type and a window on a reference-counted
/// <see cref="Storage"/>. Disposing a tensor releases its reference at once; views (<see cref="Ops.Reshape"/>,
/// <see cref="Ops.Narrow"/>) share storage and keep it alive while they live. Tensors are not thread-safe.
/// </summary>
public class Tensor : IDisposable
{
    private Storage? _storage;

    internal Tensor(Storage storage, long offset, Shape shape, DType dtype)
    {
        _storage = storage;
        Offset = offset;
        Shape = shape;
        DType = dtype;
    }

    /// <summary>The dimensions.</summary>
    public Shape Shape { get; }

    /// <summary>The element type.</summary>
    public DType DType { get; private set; }

    /// <summary>Element offset of this tensor's first element in its storage.</summary>
    public long Offset { get; private set; }

    /// <summary>Number of elements.</summary>
    public long Numel => Shape.Numel;

    /// <summary>Bytes of the elements this tensor covers.</summary>
    public long Bytes => DType.Bytes(Numel);

    /// <summary>Optional name used in error messages and state dicts.</summary>
    public string? Name { get; set; }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _storage is null;

    /// <summary>The backend the data lives on.</summary>
    public IBackend Backend => Storage.Backend;

    /// <summary>The memory behind this tensor; throws <see cref="TensorDisposedException"/> after disposal.</summary>
    public Storage Storage => _storage ?? throw new TensorDisposedException("Tensor.Storage", Describe());

    /// <summary>
    /// Whether gradients flow to or through this tensor. A leaf the user marks (or a trainable
    /// <see cref="Parameter"/>) collects its gradient in <see cref="Grad"/>; an op output requires grad
    /// when one of its inputs does and gradients are enabled.
    /// </summary>
    public bool RequiresGrad => GradSlot is not null;

    /// <summary>The accumulated gradient of a leaf after backward, or null.</summary>
    public Tensor? Grad { get; internal set; }

    /// <summary>Routing of gradients during backward (null when no gradient is needed).</summary>
    internal GradSlot? GradSlot { get; set; }

    /// <summary>How to recompute this tensor cheaply from others (set by norms, activations, layout ops).</summary>
    internal Recipe? Recipe { get; set; }

    /// <summary>Element count of one dimension (negative counts from the end).</summary>
    public int Dim(int i) => Shape[i];

    /// <summary>Marks a leaf tensor as needing a gradient (or not).</summary>
    public Tensor SetRequiresGrad(bool requiresGrad = true)
    {
        if (GradSlot is { IsLeaf: false })
        {
            throw new AutogradException($"SetRequiresGrad: {Describe()} is the output of an op, not a leaf.");
        }

        GradSlot = requiresGrad ? new GradSlot(this) : null;
        return this;
    }

    /// <summary>Releases this tensor's reference to its storage (idempotent).</summary>
    public void Dispose()
    {
        var s = Interlocked.Exchange(ref _storage, null);
        s?.Release();
        GC.SuppressFinalize(this);
    }

    /// <summary>Disposes <see cref="Grad"/> and clears it.</summary>
    public void ClearGrad()
    {
        Grad?.Dispose();
        Grad = null;
    }

    /// <summary>Copies the elements to a new host array (synchronises a device backend); bf16 elements are widened.</summary>
    public float[] ToArray()
    {
        var result = new float[Numel];
        if (DType == DType.Float32)
        {
            Backend.CopyToHost(this, result);
        }
        else
        {
            using var wide = Ops.WidenedCopy("to_array", this)!;
            Backend.CopyToHost(wide, result);
        }

        return result;
    }

    /// <summary>The single element of a one-element tensor.</summary>
    public float Item()
    {
        if (Numel != 1)
        {
            throw new ShapeMismatchException("Item", $"expected one element, got {Shape}.");
        }

        if (DType != DType.Float32)
        {
            return ToArray()[0];
        }

        Span<float> v = stackalloc float[1];
        Backend.CopyToHost(this, v);
        return v[0];
    }

    /// <summary>Overwrites the elements from host memory.</summary>
    public void CopyFrom(ReadOnlySpan<float> data)
    {
        if (data.Length != Numel)
        {
            throw new ShapeMismatchException("CopyFrom", $"{data.Length} host values for a tensor of shape {Shape}.");
        }

        if (DType == DType.Float32)
        {
            Backend.CopyFromHost(data, this);
            return;
        }

        using var wide = Empty(Backend, Shape);
        Backend.CopyFromHost(data, wide);
        Backend.Cast(wide, this);
    }

    /// <summary>
    /// Moves this tensor onto new storage of <paramref name="dtype"/> (the values converted, the old storage
    /// released): the object, its name and its gradient routing stay. Only for tensors that own their storage.
    /// </summary>
    internal void Recast(DType dtype, MemoryCategory category)
    {
        if (dtype == DType)
        {
            return;
        }

        if (DType != DType.Float32 && dtype != DType.Float32)
        {
            Recast(DType.Float32, category); // between two narrow types through fp32
        }

        var old = Storage;
        var storage = Backend.Allocate(dtype.Bytes(Numel), category);
        var target = new Tensor(storage, 0, Shape, dtype);
        Backend.Cast(this, target);
        _storage = storage;
        target._storage = null;
        DType = dtype;
        Offset = 0;
        old.Release();
    }

    /// <summary>"tensor 'name' [2, 3] float32 on cpu".</summary>
    public string Describe()
    {
        string name = Name is null ? "" : $"'{Name}' ";
        string where = _storage is null ? "disposed" : "on " + _storage.Backend.Name;
        return $"{name}{Shape} {DType.Name()} {where}";
    }

    /// <inheritdoc />
    public override string ToString() => "tensor " + Describe();

    // ---- factories ------------------------------------------------------------------------------

    /// <summary>An uninitialised tensor.</summary>
    public static Tensor Empty(IBackend backend, Shape shape, MemoryCategory category = MemoryCategory.Temporaries, DType dtype = DType.Float32)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var storage = backend.Allocate(dtype.Bytes(shape.Numel), category);
        return new Tensor(storage, 0, shape, dtype);
    }

    /// <summary>A tensor of zeros.</summary>
    public static Tensor Zeros(IBackend backend, Shape shape, MemoryCategory category = MemoryCategory.Temporaries)
        => Full(backend, shape, 0f, category);

    /// <summary>A tensor filled with one value.</summary>
    public static Tensor Full(IBackend backend, Shape shape, float value, MemoryCategory category = MemoryCategory.Temporaries)
    {
        var t = Empty(backend, shape, category);
        backend.Fill(t, value);
        return t;
    }

    /// <summary>A tensor holding a copy of host data.</summary>
    public static Tensor FromArray(IBackend backend, ReadOnlySpan<float> data, Shape shape, MemoryCategory category = MemoryCategory.Temporaries)
    {
        if (data.Length != shape.Numel)
        {
            throw new ShapeMismatchException("FromArray", $"{data.Length} values for shape {shape}.");
        }

        var t = Empty(backend, shape, category);
        backend.CopyFromHost(data, t);
        return t;
    }

    /// <summary>A view sharing this tensor's storage (no autograd; see <see cref="Ops.Reshape"/> for the recorded form).</summary>
    internal Tensor View(long offset, Shape shape)
    {
        if (DType == DType.Int8Blocks && (Offset + offset != 0 || shape.Numel != Numel))
        {
            throw new InvalidOperationException($"a view of {Describe()} must cover it whole: its scales belong to blocks of {DTypeExtensions.Int8Block}.");
        }

        var s = Storage;
        s.Retain();
        return new Tensor(s, Offset + offset, shape, DType);
    }

    /// <summary>A new handle on a storage that is still alive (used to keep a recipe's inputs).</summary>
    internal static Tensor Retained(Storage storage, long offset, Shape shape, DType dtype)
    {
        storage.Retain();
        return new Tensor(storage, offset, shape, dtype);
    }
}

/// <summary>A trainable (or frozen) model parameter: a named tensor accounted as weights.</summary>
public sealed class Parameter : Tensor
{
    internal Parameter(Storage storage, Shape shape, string name)
        : base(storage, 0, shape, DType.Float32)
    {
        Name = name;
        SetRequiresGrad(true);
    }

    /// <summary>Allocates a parameter holding a copy of <paramref name="values"/>.</summary>
    public static Parameter Create(IBackend backend, string name, Shape shape, ReadOnlySpan<float> values)
    {
        if (values.Length != shape.Numel)
        {
            throw new ShapeMismatchException("Parameter.Create", $"{values.Length} values for '{name}' of shape {shape}.");
        }

        var storage = backend.Allocate(shape.Numel * sizeof(float), MemoryCategory.Weights);
        var p = new Parameter(storage, shape, name);
        backend.CopyFromHost(values, p);
        return p;
    }

    /// <summary>Allocates a parameter without setting its values.</summary>
    public static Parameter Uninitialised(IBackend backend, string name, Shape shape) =>
        new(backend.Allocate(shape.Numel * sizeof(float), MemoryCategory.Weights), shape, name);

    /// <summary>
    /// A frozen parameter takes part in forward and passes input-gradients, but never receives a gradient
    /// and costs no weight-gradient work. Unfreezing a parameter stored in bf16 moves it back to fp32 (with
    /// the values bf16 held), since gradients and the optimizer work in fp32.
    /// </summary>
    public bool Frozen
    {
        get => !RequiresGrad;
        set
        {
            if (value)
            {
                ClearGrad();
            }
            else
            {
                Recast(DType.Float32, MemoryCategory.Weights);
            }

            SetRequiresGrad(!value);
        }
    }

    /// <summary>
    /// Keeps this parameter's values in <paramref name="dtype"/> from now on: bf16 halves its bytes (values
    /// rounded to nearest even), fp32 widens it back. Only a frozen parameter can be stored in bf16: ops widen
    /// it to fp32 where they read it, and it never has a gradient. Views taken earlier keep the old values.
    /// </summary>
    public void StoreAs(DType dtype)
    {
        if (dtype != DType.Float32 && !Frozen)
        {
            throw new InvalidOperationException($"{Describe()} is trainable; only a frozen parameter can be stored as {dtype.Name()} (gradients and the optimizer work in float32).");
        }

        Recast(dtype, MemoryCategory.Weights);
    }
}
