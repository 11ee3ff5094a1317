namespace Mobius.Engine;

/// <summary>Argument validation shared by the ops; every failure names the op and the shapes.</summary>
internal static class Check
{
    /// <summary>The tensor is not disposed and is fp32.</summary>
    public static void Live(string op, Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.IsDisposed)
        {
            throw new TensorDisposedException(op, x.Describe());
        }

        if (x.DType != DType.Float32)
        {
            throw new DTypeMismatchException(op, $"{x.Describe()}: ops compute in float32; bf16 is a storage type for frozen weights and activations kept for backward, int8 blocks for the latter.");
        }
    }

    /// <summary>All non-null tensors are live, fp32 and on one backend; returns that backend.</summary>
    public static IBackend Same(string op, params Tensor?[] xs)
    {
        IBackend? backend = null;
        Tensor? first = null;
        foreach (var x in xs)
        {
            if (x is null)
            {
                continue;
            }

            Live(op, x);
            if (first is null)
            {
                first = x;
                backend = x.Backend;
            }
            else if (!ReferenceEquals(x.Backend, backend))
            {
                throw new BackendMismatchException(op, $"{first.Describe()} and {x.Describe()} live on different backends ({backend!.Name} and {x.Backend.Name}); copy one across first.");
            }
            else if (x.DType != first.DType)
            {
                throw new DTypeMismatchException(op, $"{first.Describe()} and {x.Describe()} have different element types.");
            }
        }

        return backend ?? throw new ArgumentException($"{op}: no tensor given.");
    }

    public static void SameShape(string op, Tensor a, Tensor b)
    {
        if (a.Shape != b.Shape)
        {
            throw new ShapeMismatchException(op, $"shapes {a.Shape} and {b.Shape} differ.");
        }
    }

    public static void Rank(string op, Tensor x, int rank, string what)
    {
        if (x.Shape.Rank != rank)
        {
            throw new ShapeMismatchException(op, $"{what} must have {rank} dimensions, got {x.Shape}.");
        }
    }

    public static void MinRank(string op, Tensor x, int rank)
    {
        if (x.Shape.Rank < rank)
        {
            throw new ShapeMismatchException(op, $"needs at least {rank} dimensions, got {x.Shape}.");
        }
    }

    public static void Shape(string op, Tensor x, Shape expected, string what)
    {
        if (x.Shape != expected)
        {
            throw new ShapeMismatchException(op, $"{what} must be {expected}, got {x.Shape}.");
        }
    }

    public static void That(string op, bool condition, string message)
    {
        if (!condition)
        {
            throw new ShapeMismatchException(op, message);
        }
    }

    /// <summary>Resolves a possibly negative dimension index.</summary>
    public static int Dim(string op, Tensor x, int dim)
    {
        int d = dim < 0 ? x.Shape.Rank + dim : dim;
        if (d < 0 || d >= x.Shape.Rank)
        {
            throw new ShapeMismatchException(op, $"dimension {dim} out of range for {x.Shape}.");
        }

        return d;
    }
}
