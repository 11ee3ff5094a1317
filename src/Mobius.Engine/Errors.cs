namespace Mobius.Engine;

/// <summary>Tensors of an op do not have the shapes the op needs.</summary>
public sealed class ShapeMismatchException(string op, string message) : ArgumentException($"{op}: {message}")
{
    /// <summary>The op that refused its arguments.</summary>
    public string Op { get; } = op;
}

/// <summary>Tensors of an op do not have the element type the op needs.</summary>
public sealed class DTypeMismatchException(string op, string message) : ArgumentException($"{op}: {message}")
{
    /// <summary>The op that refused its arguments.</summary>
    public string Op { get; } = op;
}

/// <summary>An op was given tensors that live on different backends.</summary>
public sealed class BackendMismatchException(string op, string message) : ArgumentException($"{op}: {message}")
{
    /// <summary>The op that refused its arguments.</summary>
    public string Op { get; } = op;
}

/// <summary>A tensor was used after it was disposed.</summary>
public sealed class TensorDisposedException(string op, string tensor)
    : ObjectDisposedException(tensor, $"{op}: tensor {tensor} was used after it was disposed.")
{
    /// <summary>The op that was given the disposed tensor.</summary>
    public string Op { get; } = op;
}

/// <summary>Misuse of the autograd: backward twice, backward of a tensor that needs no gradient, and the like.</summary>
public sealed class AutogradException(string message) : InvalidOperationException(message);

/// <summary>A loss (or another checked value) is NaN or infinite.</summary>
public sealed class NonFiniteException(string op, string message) : ArithmeticException($"{op}: {message}")
{
    /// <summary>The op whose output was not finite.</summary>
    public string Op { get; } = op;
}

/// <summary>A backend could not allocate memory even after emptying its cache.</summary>
public sealed class OutOfDeviceMemoryException(string backend, long requested, long inUse, long reserved)
    : OutOfMemoryException($"{backend}: out of memory allocating {Units.Bytes(requested)} ({Units.Bytes(inUse)} in use, {Units.Bytes(reserved)} reserved).")
{
    /// <summary>Bytes of the request that failed.</summary>
    public long RequestedBytes { get; } = requested;
}

/// <summary>Formatting of sizes and rates for messages and reports.</summary>
public static class Units
{
    /// <summary>"12.3 MiB".</summary>
    public static string Bytes(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (Math.Abs(v) >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }

        return u == 0 ? $"{bytes} B" : $"{v:0.0} {units[u]}";
    }
}
