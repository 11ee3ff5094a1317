using System.Runtime.Intrinsics;

namespace Mobius.Engine;

/// <summary>
/// Element type of a tensor. Every op computes in fp32. bf16 and <see cref="Int8Blocks"/> are storage types: frozen
/// weights of linear, convolution and embedding layers can be kept in either (<see cref="NN.Module.StoreFrozenWeights"/>),
/// a half or about a quarter of their fp32 bytes, and are widened to fp32 one layer at a time where an op reads them
/// (<see cref="IBackend.Cast"/>). The activations a step keeps for backward can be kept in either too
/// (<see cref="Autograd.Tape.SavedActivations"/>), and AdamW's moments in bf16 (<see cref="Optim.AdamW.StateType"/>).
/// </summary>
public enum DType
{
    /// <summary>IEEE 754 single precision.</summary>
    Float32,

    /// <summary>bfloat16: the top 16 bits of an fp32 (8 exponent bits, 7 mantissa bits), as storage.</summary>
    BFloat16,

    /// <summary>
    /// int8 with an fp32 scale for every block of <see cref="DTypeExtensions.Int8Block"/> consecutive elements, as
    /// storage only (activations kept for backward: <see cref="Autograd.Tape.SavedActivations"/>; frozen weights:
    /// <see cref="NN.Module.StoreFrozenWeights"/>): a block's largest magnitude m maps to 127, each element to
    /// rint(x (127 / m)), read back as q (m / 127) (docs/ops.md, `Cast`). The int8 values come first, then the scales from the next multiple of 16 bytes; a tensor of
    /// this type always starts its storage.
    /// </summary>
    Int8Blocks,
}

/// <summary>Facts about <see cref="DType"/> values.</summary>
public static class DTypeExtensions
{
    /// <summary>Elements that share one scale in <see cref="DType.Int8Blocks"/>.</summary>
    public const int Int8Block = 128;

    /// <summary>Bytes per element (for <see cref="DType.Int8Blocks"/>, of its int8 values; <see cref="Bytes"/> adds the scales).</summary>
    public static int Size(this DType dtype) => dtype switch
    {
        DType.Float32 => 4,
        DType.BFloat16 => 2,
        DType.Int8Blocks => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>Bytes that <paramref name="numel"/> elements take (<see cref="DType.Int8Blocks"/>: values, padding and scales).</summary>
    public static long Bytes(this DType dtype, long numel) =>
        dtype == DType.Int8Blocks ? Int8ScalesOffset(numel) + (4 * ((numel + Int8Block - 1) / Int8Block)) : numel * dtype.Size();

    /// <summary>Where the scales of <paramref name="numel"/> <see cref="DType.Int8Blocks"/> elements start: the values rounded up to 16 bytes.</summary>
    public static long Int8ScalesOffset(long numel) => (numel + 15) & ~15L;

    /// <summary>Lower-case name as PyTorch and safetensors spell it ("float32", "bfloat16"; "int8" for <see cref="DType.Int8Blocks"/>).</summary>
    public static string Name(this DType dtype) => dtype switch
    {
        DType.Float32 => "float32",
        DType.BFloat16 => "bfloat16",
        DType.Int8Blocks => "int8",
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

    /// <summary><see cref="ToFloat"/> of the eight bf16 values at <paramref name="p"/>.</summary>
    public static unsafe Vector256<float> Widen(ushort* p) =>
        Vector256.ShiftLeft(Vector256.WidenLower(Vector128.Load(p).ToVector256Unsafe()), 16).AsSingle();

    /// <summary><paramref name="value"/> rounded to the nearest bf16, as fp32.</summary>
    public static float Round(float value) => ToFloat(FromFloat(value));
}

/// <summary>
/// Stochastic rounding to bf16 (the optimiser's bf16 moments): the low 16 bits of a random word are added to the fp32
/// bits before they are cut to the top 16, so a value rounds up with probability its distance from the lower
/// neighbour over the gap, and the rounding is unbiased. The random words are a hash of (step, tensor, element),
/// the same as the kernels' (adamw.cu), so a run is repeatable.
/// </summary>
public static class StochasticRounding
{
    /// <summary>A 32-bit integer hash (lowbias32: two multiply-xorshift rounds).</summary>
    public static uint Mix(uint x)
    {
        x ^= x >> 16;
        x *= 0x7feb352du;
        x ^= x >> 15;
        x *= 0x846ca68bu;
        x ^= x >> 16;
        return x;
    }

    /// <summary>The random word of element <paramref name="i"/> of tensor <paramref name="tensor"/> at <paramref name="step"/>.</summary>
    public static uint Bits(int step, int tensor, long i) =>
        Mix((uint)i ^ Mix((uint)(i >> 32) ^ Mix((uint)tensor ^ Mix((uint)step))));

    /// <summary>bf16 bits of <paramref name="value"/> rounded up with probability (low 16 bits) / 2^16 by <paramref name="random"/>; NaN and infinity round to nearest.</summary>
    public static ushort ToBFloat16(float value, uint random)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        return (u & 0x7f80_0000u) == 0x7f80_0000u ? BFloat16Bits.FromFloat(value) : (ushort)((u + (random & 0xffffu)) >> 16);
    }

    /// <summary><see cref="Mix(uint)"/> in each lane.</summary>
    public static Vector256<uint> Mix(Vector256<uint> x)
    {
        x ^= Vector256.ShiftRightLogical(x, 16);
        x *= Vector256.Create(0x7feb352du);
        x ^= Vector256.ShiftRightLogical(x, 15);
        x *= Vector256.Create(0x846ca68bu);
        x ^= Vector256.ShiftRightLogical(x, 16);
        return x;
    }

    /// <summary><see cref="Bits(int, int, long)"/> of elements <paramref name="i"/> .. i + 7 (their indices' high words equal).</summary>
    public static Vector256<uint> Bits8(int step, int tensor, long i) =>
        Mix((Vector256.Create((uint)i) + Vector256.Create(0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u))
            ^ Vector256.Create(Mix((uint)(i >> 32) ^ Mix((uint)tensor ^ Mix((uint)step)))));

    /// <summary><see cref="ToBFloat16(float, uint)"/> of eight values, stored at <paramref name="dst"/>.</summary>
    public static unsafe void Store(Vector256<float> x, Vector256<uint> random, ushort* dst)
    {
        var u = x.AsUInt32();
        var exponent = Vector256.Create(0x7f80_0000u);
        if (!Vector256.EqualsAny(u & exponent, exponent))
        {
            var rounded = Vector256.ShiftRightLogical(u + (random & Vector256.Create(0xffffu)), 16);
            Vector256.Narrow(rounded, rounded).GetLower().Store(dst);
            return;
        }

        for (int l = 0; l < 8; l++)
        {
            dst[l] = ToBFloat16(x[l], random[l]);
        }
    }
}
