using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Mobius.Engine.IO;

/// <summary>
/// Reads and writes the safetensors format (an 8-byte little-endian header length, a JSON header of
/// name -> {dtype, shape, data_offsets} plus string metadata, then the raw little-endian data), so
/// PyTorch's <c>safetensors.torch.load_file</c> reads our checkpoints. Writes are atomic: a temporary
/// file in the same folder, flushed to disk, then renamed over the target; a failure leaves the old
/// file untouched.
/// </summary>
public static class SafeTensors
{
    private const long MaxHeaderBytes = 100L << 20;

    /// <summary>A named fp32 tensor on the host.</summary>
    public sealed record Entry(int[] Shape, float[] Data);

    /// <summary>Writes <paramref name="tensors"/> and <paramref name="metadata"/> to <paramref name="path"/> atomically.</summary>
    public static void Write(string path, IReadOnlyDictionary<string, Entry> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (k, v) in metadata)
            {
                meta[k] = v;
            }

            header["__metadata__"] = meta;
        }

        long offset = 0;
        var ordered = tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        foreach (var (name, entry) in ordered)
        {
            long count = entry.Shape.Aggregate(1L, (a, d) => a * d);
            if (count != entry.Data.Length)
            {
                throw new ArgumentException($"safetensors: '{name}' has shape [{string.Join(", ", entry.Shape)}] but {entry.Data.Length} values.");
            }

            long bytes = count * 4;
            header[name] = new JsonObject
            {
                ["dtype"] = "F32",
                ["shape"] = new JsonArray(entry.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }

        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(dir);
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
                fs.Write(len);
                fs.Write(json);
                for (int i = json.Length; i < padded; i++)
                {
                    fs.WriteByte((byte)' ');
                }

                foreach (var (_, entry) in ordered)
                {
                    WriteFloats(fs, entry.Data);
                }

                fs.Flush(flushToDisk: true);
            }

            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>
    /// Reads every tensor and the metadata; throws <see cref="InvalidDataException"/> naming the file for anything malformed.
    /// F16, BF16 and F64 tensors (as PyTorch exports half-precision weights) are read as fp32.
    /// </summary>
    public static (Dictionary<string, Entry> Tensors, Dictionary<string, string> Metadata) Read(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"no such file: {path}", path);
        }

        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        Span<byte> len = stackalloc byte[8];
        if (fs.Length < 8 || fs.Read(len) != 8)
        {
            throw Corrupt(path, "file is shorter than the 8-byte header length");
        }

        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(len);
        if (headerLen == 0 || headerLen > (ulong)MaxHeaderBytes || (long)headerLen > fs.Length - 8)
        {
            throw Corrupt(path, $"header length {headerLen} does not fit a file of {fs.Length} bytes");
        }

        var json = new byte[headerLen];
        fs.ReadExactly(json);
        JsonObject header;
        try
        {
            header = JsonNode.Parse(json)?.AsObject() ?? throw Corrupt(path, "empty header");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw Corrupt(path, "header is not a JSON object: " + e.Message);
        }

        long dataStart = 8 + (long)headerLen;
        long dataLen = fs.Length - dataStart;
        var tensors = new Dictionary<string, Entry>();
        var metadata = new Dictionary<string, string>();
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
            {
                foreach (var (k, v) in node?.AsObject() ?? new JsonObject())
                {
                    metadata[k] = v?.GetValue<string>() ?? "";
                }

                continue;
            }

            try
            {
                var o = node!.AsObject();
                string dtype = o["dtype"]!.GetValue<string>();
                int size = dtype switch
                {
                    "F32" => 4,
                    "F16" or "BF16" => 2,
                    "F64" => 8,
                    _ => throw Corrupt(path, $"'{name}' has dtype {dtype}; only floating-point tensors (F32, F16, BF16, F64) can be read"),
                };

                int[] shape = o["shape"]!.AsArray().Select(d => d!.GetValue<int>()).ToArray();
                var offs = o["data_offsets"]!.AsArray();
                long begin = offs[0]!.GetValue<long>(), end = offs[1]!.GetValue<long>();
                long count = shape.Aggregate(1L, (a, d) => a * d);
                if (count < 0 || begin < 0 || end > dataLen || end - begin != count * size)
                {
                    throw Corrupt(path, $"'{name}' data [{begin}, {end}) does not match {dtype} shape [{string.Join(", ", shape)}] within {dataLen} data bytes");
                }

                if (!BitConverter.IsLittleEndian)
                {
                    throw new PlatformNotSupportedException("safetensors: big-endian hosts are not supported.");
                }

                fs.Position = dataStart + begin;
                tensors[name] = new Entry(shape, ReadAsFloats(fs, dtype, count));
            }
            catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException or EndOfStreamException)
            {
                throw Corrupt(path, $"entry '{name}' is malformed ({e.Message})");
            }
        }

        return (tensors, metadata);
    }

    /// <summary>
    /// <paramref name="count"/> values of <paramref name="dtype"/> from the stream, as fp32: F16 and BF16 widen exactly,
    /// F64 rounds to nearest.
    /// </summary>
    private static float[] ReadAsFloats(Stream s, string dtype, long count)
    {
        var data = new float[count];
        switch (dtype)
        {
            case "F32":
                s.ReadExactly(MemoryMarshal.AsBytes(data.AsSpan()));
                break;
            case "F16" or "BF16":
            {
                var bits = new ushort[count];
                s.ReadExactly(MemoryMarshal.AsBytes(bits.AsSpan()));
                for (long i = 0; i < count; i++)
                {
                    data[i] = dtype == "F16"
                        ? (float)BitConverter.UInt16BitsToHalf(bits[i])
                        : BFloat16Bits.ToFloat(bits[i]);
                }

                break;
            }

            default:
            {
                var wide = new double[count];
                s.ReadExactly(MemoryMarshal.AsBytes(wide.AsSpan()));
                for (long i = 0; i < count; i++)
                {
                    data[i] = (float)wide[i];
                }

                break;
            }
        }

        return data;
    }

    private static void WriteFloats(Stream s, float[] data)
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("safetensors: big-endian hosts are not supported.");
        }

        s.Write(MemoryMarshal.AsBytes(data.AsSpan()));
    }

    private static InvalidDataException Corrupt(string path, string why) => new($"{path} is not a valid safetensors file: {why}.");
}
