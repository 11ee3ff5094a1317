using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Mobius.Engine.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// Depth of a packed block. A kc x NR micro-panel of B is 24 KiB at 384, most of the 32 KiB L1d,
    /// and 384 terms amortise each C update; 256 to 512 measured within a few percent on 512^3.
    /// </summary>
    internal const int KC = 384;

    /// <summary>Rows of a packed A block: MC x KC x 4 B = 216 KiB, under half the 512 KiB L2 with B panels streaming past.</summary>
    internal const int MC = 144;

    /// <summary>Columns of a packed B block: KC x NC x 4 B = 3 MiB per thread, a slice of the shared 32 MiB L3.</summary>
    internal const int NC = 2048;

    /// <summary>Per-thread packing buffer, pinned so the packed panels can be addressed by pointer.</summary>
    [ThreadStatic]
    private static float[]? t_scratch;

    /// <summary>
    /// The serial blocked product C = alpha op(A) op(B) + beta C over the packed-panel loops
    /// (jc over NC, pc over KC, ic over MC, then jr, ir over the micro-tiles).
    /// </summary>
    private static void Blocked<TOps, TV>(ASource a, GemmOperand b, int m, int n, int k, float alpha, float beta, float* c, nint ldc)
        where TOps : struct, ISimdOps<TV>
        where TV : struct
    {
        int nr = NR<TOps, TV>();

        // Equal blocks rather than full blocks plus a thin remainder, so no block is too thin to amortise its packing.
        int kc0 = EvenBlock(k, KC, 1);
        int mc0 = EvenBlock(m, MC, MR);
        int nc0 = EvenBlock(n, NC, nr);
        float* bp = Scratch((long)kc0 * nc0 + (a.Packed == null ? (long)mc0 * kc0 : 0));
        float* ap = bp + (long)kc0 * nc0;

        for (int jc = 0; jc < n; jc += nc0)
        {
            int nc = Math.Min(nc0, n - jc);
            for (int pc = 0; pc < k; pc += kc0)
            {
                int kc = Math.Min(kc0, k - pc);
                PackBlock(nr, nc, kc, b, jc, pc, bp, (nint)nr * kc);

                // Later depth blocks add to what the first one wrote.
                float betaBlock = pc == 0 ? beta : 1f;
                for (int ic = 0; ic < m; ic += mc0)
                {
                    int mc = Math.Min(mc0, m - ic);
                    if (a.Packed == null)
                    {
                        PackBlock(MR, mc, kc, a.Op, ic, pc, ap, (nint)MR * kc);
                    }

                    for (int jr = 0; jr < nc; jr += nr)
                    {
                        for (int ir = 0; ir < mc; ir += MR)
                        {
                            float* panel = a.Packed == null ? ap + (long)ir * kc : a.Panel(ic + ir, pc);
                            MicroKernel<TOps, TV, Yes>(kc, panel, 1, MR, Math.Min(MR, mc - ir), bp + (long)jr * kc, nr, Math.Min(nr, nc - jr),
                                c + (ic + ir) * ldc + jc + jr, ldc, alpha, betaBlock);
                        }
                    }
                }
            }
        }
    }

    /// <summary>
    /// The light path: op(A) is read by the micro-kernel where it lies (or from its prepacked panels), and
    /// op(B) one NR-column strip at a time, in place when its rows are contiguous and close together, else
    /// packed (zero-padded) into scratch: a transposed B, the ragged last strip, or rows so far apart
    /// (<see cref="DirectRowStride"/>) that a strip's rows would share a handful of L1 sets. Depth is cut
    /// into KC blocks so each block of the strip stays in L1 while every A panel passes over it.
    /// Neither operand is segmented.
    /// </summary>
    private static void Unpacked<TOps, TV, TPackedA>(ASource a, GemmOperand b, int m, int n, int k, float alpha, float beta, float* c, nint ldc)
        where TOps : struct, ISimdOps<TV>
        where TV : struct
        where TPackedA : struct, IFlag
    {
        int nr = NR<TOps, TV>();
        int kc0 = EvenBlock(k, KC, 1);
        float* strip = null;
        for (int jr = 0; jr < n; jr += nr)
        {
            int cols = Math.Min(nr, n - jr);
            float* bp = b.At(jr, 0);
            nint bStep = b.Depth;
            if (b.Line != 1 || cols < nr || b.Depth > DirectRowStride)
            {
                strip = strip == null ? Scratch((long)k * nr) : strip;
                PackBlock(nr, cols, k, b, jr, 0, strip, 0);
                bp = strip;
                bStep = nr;
            }

            for (int pc = 0; pc < k; pc += kc0)
            {
                int kc = Math.Min(kc0, k - pc);
                float betaBlock = pc == 0 ? beta : 1f;
                for (int ir = 0; ir < m; ir += MR)
                {
                    float* ai = TPackedA.Value ? a.Panel(ir, pc) : a.Op.At(ir, pc);
                    MicroKernel<TOps, TV, TPackedA>(kc, ai, a.Op.Line, a.Op.Depth, Math.Min(MR, m - ir), bp + pc * bStep, bStep, cols,
                        c + ir * ldc + jr, ldc, alpha, betaBlock);
                }
            }
        }
    }

    /// <summary>
    /// Widest row stride (floats) at which the light path reads B in place: rows 64 floats apart cover all
    /// 64 L1 sets every 64 rows, rows 256 floats apart (1 KiB) only 4 of them.
    /// </summary>
    internal const int DirectRowStride = 64;

    /// <summary>The block size that splits <paramref name="total"/> into equal blocks of at most <paramref name="max"/>, rounded up to <paramref name="unit"/>.</summary>
    private static int EvenBlock(int total, int max, int unit)
    {
        int blocks = (total + max - 1) / max;
        int size = (total + blocks - 1) / blocks;
        return (size + unit - 1) / unit * unit;
    }

    /// <summary>A 64-byte aligned buffer of at least <paramref name="floats"/> floats owned by the calling thread.</summary>
    private static float* Scratch(long floats)
    {
        var buf = t_scratch;
        if (buf is null || buf.Length < floats + 16)
        {
            // Grow in 256 KiB steps so a run of slightly larger products does not reallocate each time.
            long size = (floats + 16 + 65535) & ~65535L;
            buf = GC.AllocateUninitializedArray<float>(checked((int)size), pinned: true);
            t_scratch = buf;
        }

        nint p = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buf));
        return (float*)((p + 63) & ~(nint)63);
    }
}
