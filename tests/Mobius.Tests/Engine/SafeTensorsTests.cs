using System.Buffers.Binary;
using System.Text;
using Mobius.Engine.IO;
using Mobius.Tests.Data;
using Xunit;

namespace Mobius.Tests.Engine;

public sealed class SafeTensorsTests
{
    /// <summary>
    /// A safetensors file written here byte by byte from the format's definition (not by <see cref="SafeTensors.Write"/>):
    /// each entry a dtype, a shape and its raw little-endian bytes.
    /// </summary>
    private static void WriteByHand(string path, params (string Name, string Dtype, int[] Shape, byte[] Bytes)[] entries)
    {
        var header = new StringBuilder("{\"__metadata__\":{\"made_by\":\"hand\"}");
        long offset = 0;
        foreach (var (name, dtype, shape, bytes) in entries)
        {
            header.Append($",\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[{offset},{offset + bytes.Length}]}}");
            offset += bytes.Length;
        }

        header.Append('}');
        byte[] json = Encoding.UTF8.GetBytes(header.ToString());
        using var fs = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)json.Length);
        fs.Write(len);
        fs.Write(json);
        foreach (var e in entries)
        {
            fs.Write(e.Bytes);
        }
    }

    private static byte[] Halves(float[] x)
    {
        var b = new byte[x.Length * 2];
        for (int i = 0; i < x.Length; i++)
        {
            BinaryPrimitives.WriteHalfLittleEndian(b.AsSpan(2 * i), (Half)x[i]);
        }

        return b;
    }

    // bf16 by rounding to nearest even on the top 16 bits of the fp32 pattern, as PyTorch converts.
    private static byte[] BFloat16s(float[] x)
    {
        var b = new byte[x.Length * 2];
        for (int i = 0; i < x.Length; i++)
        {
            uint u = BitConverter.SingleToUInt32Bits(x[i]);
            u += 0x7FFF + ((u >> 16) & 1);
            BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(2 * i), (ushort)(u >> 16));
        }

        return b;
    }

    private static byte[] Doubles(double[] x)
    {
        var b = new byte[x.Length * 8];
        for (int i = 0; i < x.Length; i++)
        {
            BinaryPrimitives.WriteDoubleLittleEndian(b.AsSpan(8 * i), x[i]);
        }

        return b;
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Half_precision_and_double_tensors_read_as_fp32_within_their_rounding(int seed)
    {
        var rng = new Rng(seed);
        using var folder = new TempFolder();
        float[] h = rng.Uniform(6 * 5, scale: 3f), bf = rng.Uniform(4 * 7, scale: 50f);
        double[] d = [.. rng.Uniform(9, scale: 2f).Select(v => v / 3.0)];
        h[0] = -0f;
        bf[1] = 1e-30f; // bf16 keeps fp32's range: a value far below fp16's smallest
        string path = folder.File("exported.safetensors");
        WriteByHand(path, ("a.half", "F16", [6, 5], Halves(h)), ("b.bf16", "BF16", [4, 7], BFloat16s(bf)), ("c.f64", "F64", [9], Doubles(d)));

        var (tensors, meta) = SafeTensors.Read(path);
        Assert.Equal("hand", meta["made_by"]);
        Assert.Equal([6, 5], tensors["a.half"].Shape);
        Assert.Equal([4, 7], tensors["b.bf16"].Shape);
        for (int i = 0; i < h.Length; i++)
        {
            // fp16 keeps 11 significant bits: within half a unit in the last place, 2^-11 relative.
            Assert.True(Math.Abs(tensors["a.half"].Data[i] - h[i]) <= Math.Abs(h[i]) * MathF.Pow(2, -11) + 1e-7f, $"seed {seed}, F16 [{i}]: {tensors["a.half"].Data[i]} for {h[i]}");
        }

        Assert.True(float.IsNegative(tensors["a.half"].Data[0]));
        for (int i = 0; i < bf.Length; i++)
        {
            // bf16 keeps 8 significant bits: within 2^-8 relative.
            Assert.True(Math.Abs(tensors["b.bf16"].Data[i] - bf[i]) <= Math.Abs(bf[i]) * MathF.Pow(2, -8), $"seed {seed}, BF16 [{i}]: {tensors["b.bf16"].Data[i]} for {bf[i]}");
        }

        Assert.Equal(d.Select(v => (float)v), tensors["c.f64"].Data);
    }

    [Fact]
    public void Other_dtypes_and_sizes_that_do_not_match_the_dtype_are_refused_by_name()
    {
        using var folder = new TempFolder();
        string ints = folder.File("ints.safetensors");
        WriteByHand(ints, ("steps", "I64", [2], new byte[16]));
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(ints));
        Assert.Contains("'steps' has dtype I64", e.Message);

        // Four bf16 values' bytes under a shape of four fp32 values.
        string shortData = folder.File("short.safetensors");
        WriteByHand(shortData, ("w", "F32", [4], BFloat16s([1f, 2f, 3f, 4f])));
        e = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(shortData));
        Assert.Contains("'w' data [0, 8) does not match F32 shape [4]", e.Message);
    }
}
