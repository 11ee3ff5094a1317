namespace Mobius.Engine;

/// <summary>Element type of a tensor. fp32 is implemented everywhere; bf16 is reserved for the mixed-precision path.</summary>
public enum DType
{
    /// <summary>IEEE 754 single precision.</summary>
    Float32,

    /// <summary>bfloat16 storage with fp32 accumulation (not implemented by any backend yet).</summary>
    BFloat16,
}

/// <summary>Facts about <see cref="DType"/> values.</summary>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this DType dtype) => dtype switch
    {
        DType.Float32 => 4,
        DType.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>Lower-case name as PyTorch and safetensors spell it ("float32", "bfloat16").</summary>
    public static string Name(this DType dtype) => dtype switch
    {
        DType.Float32 => "float32",
        DType.BFloat16 => "bfloat16",
        _ => dtype.ToString(),
    };
}
