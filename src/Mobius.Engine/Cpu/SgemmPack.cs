using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Mobius.Engine.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// Packs lines [line0, line0 + lines) by depths [depth0, depth0 + kc) of an operand into panels of
    /// <paramref name="width"/> lines, panel t at dst + t*panelStride holding line t*width + r, depth p at
    /// offset p*width + r, zero for lines past the last. The same routine packs A row panels (lines = rows
    /// of op(A)) and B column panels (lines = columns of op(B)), whatever the transposition: only which
    /// stride is 1 changes. A depth range that crosses segments is packed one piece per segment.
    /// </summary>
    private static void PackBlock(int width, int lines, int kc, in GemmOperand op, int line0, int depth0, float* dst, nint panelStride)
    {
        for (int p = 0; p < kc;)
        {
            int run = Math.Min(kc - p, op.SegLen - (depth0 + p) % op.SegLen);
            PackPiece(width, lines, run, op.At(line0, depth0 + p), op.Line, op.Depth, dst + (long)p * width, panelStride);
            p += run;
        }

        int tail = lines % width;
        if (tail != 0)
        {
            float* last = dst + lines / width * panelStride;
            for (int q = 0; q < kc; q++)
            {
                Clear(last + (long)q * width + tail, width - tail);
            }
        }
    }

    /// <summary>One segment's piece of <see cref="PackBlock"/>: dst[t*panelStride + p*width + r] = src[(t*width + r)*lineStride + p*depthStride].</summary>
    private static void PackPiece(int width, int lines, int kc, float* src, nint lineStride, nint depthStride, float* dst, nint panelStride)
    {
        if (lineStride == 1)
        {
            // Each depth step is one contiguous run of all the lines: read it once, in order, and deal it
            // out to the panels (walking panel by panel instead would fetch each cache line width/16 times).
            for (int p = 0; p < kc; p++)
            {
                float* s = src + p * depthStride;
                float* d = dst + (long)p * width;
                for (int l = 0; l < lines; l += width, s += width, d += panelStride)
                {
                    Copy(d, s, Math.Min(width, lines - l));
                }
            }

            return;
        }

        for (int l = 0; l < lines; l += width)
        {
            int count = Math.Min(width, lines - l);
            float* s = src + l * lineStride;
            float* d = dst + l / width * panelStride;
            int p = depthStride == 1 && Avx.IsSupported ? PackTransposed(width, count, kc, s, lineStride, d) : 0;

            // The rest (or a fully strided view): walk lines, scatter with stride width.
            for (int r = 0; r < count; r++)
            {
                float* sr = s + r * lineStride;
                float* dr = d + r;
                for (int q = p; q < kc; q++)
                {
                    dr[(long)q * width] = sr[q * depthStride];
                }
            }
        }
    }

    /// <summary>
    /// The transposing case of <see cref="PackPiece"/> (the <paramref name="count"/> lines of one panel each
    /// contiguous in depth) in 8 x 8 register transposes: eight loads and eight stores where the scalar
    /// loop does 64 of each. A group of fewer than 8 lines repeats its last line and stores all 8 lanes;
    /// lanes past <paramref name="count"/> are padding that <see cref="PackBlock"/> zeroes afterwards, and
    /// with width 6 the 2 lanes past the panel row land on the next depth step, stored in increasing address
    /// order so the next store overwrites them; the last depth steps are then always left to the caller's
    /// scalar loop (which overwrites the final 2). Returns the number of depth steps done.
    /// </summary>
    private static int PackTransposed(int width, int count, int kc, float* src, nint lineStride, float* dst)
    {
        int done = width % 8 == 0 ? kc / 8 * 8 : (kc - 1) / 8 * 8;
        for (int g = 0; g < count; g += 8)
        {
            int rows = Math.Min(8, count - g);
            float* s = src + g * lineStride;
            float* d = dst + g;
            nint l1 = Math.Min(1, rows - 1) * lineStride, l2 = Math.Min(2, rows - 1) * lineStride, l3 = Math.Min(3, rows - 1) * lineStride;
            nint l4 = Math.Min(4, rows - 1) * lineStride, l5 = Math.Min(5, rows - 1) * lineStride, l6 = Math.Min(6, rows - 1) * lineStride;
            nint l7 = Math.Min(7, rows - 1) * lineStride;
            for (int p = 0; p < done; p += 8)
            {
                Transpose8(
                    Avx.LoadVector256(s + p), Avx.LoadVector256(s + l1 + p), Avx.LoadVector256(s + l2 + p), Avx.LoadVector256(s + l3 + p),
                    Avx.LoadVector256(s + l4 + p), Avx.LoadVector256(s + l5 + p), Avx.LoadVector256(s + l6 + p), Avx.LoadVector256(s + l7 + p),
                    d + (long)p * width, width);
            }
        }

        return done;
    }

    /// <summary>
    /// d[0..count) = s[0..count) in the widest vectors first. The kernel reads a B panel row right after it
    /// is packed, in 256-bit loads; a load that spans several smaller pending stores cannot be forwarded
    /// from them and stalls, which dominated tiny products before the copies were made this wide.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Copy(float* d, float* s, int count)
    {
        int r = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; r + 8 <= count; r += 8)
            {
                Vector256.Load(s + r).Store(d + r);
            }
        }

        for (; r + 4 <= count; r += 4)
        {
            Vector128.Load(s + r).Store(d + r);
        }

        for (; r < count; r++)
        {
            d[r] = s[r];
        }
    }

    /// <summary>d[0..count) = 0, in the widest vectors first (see <see cref="Copy"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Clear(float* d, int count)
    {
        int r = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; r + 8 <= count; r += 8)
            {
                Vector256<float>.Zero.Store(d + r);
            }
        }

        for (; r + 4 <= count; r += 4)
        {
            Vector128<float>.Zero.Store(d + r);
        }

        for (; r < count; r++)
        {
            d[r] = 0f;
        }
    }

    /// <summary>Stores column q of the 8 x 8 block of rows r0..r7 at d[q*stride .. + 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, float* d, nint stride)
    {
        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44);
        var s1 = Avx.Shuffle(t0, t2, 0xEE);
        var s2 = Avx.Shuffle(t1, t3, 0x44);
        var s3 = Avx.Shuffle(t1, t3, 0xEE);
        var s4 = Avx.Shuffle(t4, t6, 0x44);
        var s5 = Avx.Shuffle(t4, t6, 0xEE);
        var s6 = Avx.Shuffle(t5, t7, 0x44);
        var s7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(d, Avx.Permute2x128(s0, s4, 0x20));
        Avx.Store(d + stride, Avx.Permute2x128(s1, s5, 0x20));
        Avx.Store(d + 2 * stride, Avx.Permute2x128(s2, s6, 0x20));
        Avx.Store(d + 3 * stride, Avx.Permute2x128(s3, s7, 0x20));
        Avx.Store(d + 4 * stride, Avx.Permute2x128(s0, s4, 0x31));
        Avx.Store(d + 5 * stride, Avx.Permute2x128(s1, s5, 0x31));
        Avx.Store(d + 6 * stride, Avx.Permute2x128(s2, s6, 0x31));
        Avx.Store(d + 7 * stride, Avx.Permute2x128(s3, s7, 0x31));
    }
}
