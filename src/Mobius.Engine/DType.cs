namespace Mobius.Engine;

/// <summary>
/// Element type of a tensor. Every op computes in fp32. bf16 is a storage type: frozen weights of linear,
/// convolution and embedding layers can be kept in it (<see cref="NN.Module.StoreFrozenWeights"/>), half
/// their fp32 bytes, and are widened to fp32 one layer at a time where an op reads them
/// (<see cref="IBackend.Cast"/>).
/// </summary>
public enum DType
{
    /// <summary>IEEE 754 single precision.</summary>
    Float32,

    /// <summary>bfloat16: the top 16 bits of an fp32 (8 exponent bits, 7 mantissa bits), as storage.</summary>
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

/// <summary>bfloat16 bit patterns: the top half of an fp32's bits.</summary>
public static class BFloat16Bits
{
    /// <summary>The bf16 nearest <paramref name="value"/> (ties to even; NaN stays a quiet NaN, infinities stay).</summary>
    public static ushort FromFloat(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if ((u & 0x7fff_ffffu) > 0x7f80_0000u)
        {
            return (ushort)((u >> 16) | 0x0040u);
        }

        return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }

    /// <summary>The fp32 a bf16 stands for (exact).</summary>
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary><paramref name="value"/> rounded to the nearest bf16, as fp32.</summary>
    public static float Round(float value) => ToFloat(FromFloat(value));
}
