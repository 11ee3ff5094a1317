using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Mobius.Engine.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// Depth of a packed block. A kc x NR micro-panel of B is 16 KiB at 256 (half the 32 KiB L1d, leaving
    /// room for the A micro-panel and C), and 256 terms amortise each C update well.
    /// </summary>
    internal const int KC = 256;

    /// <summary>Rows of a packed A block: MC x KC x 4 B = 144 KiB, well inside the 512 KiB L2 with B streaming past.</summary>
    internal const int MC = 144;

    /// <summary>Columns of a packed B block: KC x NC x 4 B = 2 MiB per thread, a slice of the shared 32 MiB L3.</summary>
    internal const int NC = 2048;

    /// <summary>Per-thread packing buffer, pinned so the packed panels can be addressed by pointer.</summary>
    [ThreadStatic]
    private static float[]? t_scratch;

    /// <summary>
    /// The serial blocked product C = alpha op(A) op(B) + beta C over the packed-panel loops
    /// (jc over NC, pc over KC, ic over MC, then jr, ir over the micro-tiles).
    /// </summary>
    private static void Blocked<TOps, TV>(Strided opA, Strided opB, int m, int n, int k, float alpha, float beta, float* c, nint ldc)
        where TOps : struct, ISimdOps<TV>
        where TV : struct
    {
        int nr = NR<TOps, TV>();

        // Equal blocks rather than full blocks plus a thin remainder, so no block is too thin to amortise its packing.
        int kc0 = EvenBlock(k, KC, 1);
        int mc0 = EvenBlock(m, MC, MR);
        int nc0 = EvenBlock(n, NC, nr);
        float* ap = Scratch((long)mc0 * kc0 + (long)kc0 * nc0);
        float* bp = ap + (long)mc0 * kc0;

        for (int jc = 0; jc < n; jc += nc0)
        {
            int nc = Math.Min(nc0, n - jc);
            for (int pc = 0; pc < k; pc += kc0)
            {
                int kc = Math.Min(kc0, k - pc);
                for (int jr = 0; jr < nc; jr += nr)
                {
                    PackPanel(nr, Math.Min(nr, nc - jr), kc, opB.At(pc, jc + jr), opB.Cs, opB.Rs, bp + (long)jr * kc);
                }

                // Later depth blocks add to what the first one wrote.
                float betaBlock = pc == 0 ? beta : 1f;
                for (int ic = 0; ic < m; ic += mc0)
                {
                    int mc = Math.Min(mc0, m - ic);
                    for (int ir = 0; ir < mc; ir += MR)
                    {
                        PackPanel(MR, Math.Min(MR, mc - ir), kc, opA.At(ic + ir, pc), opA.Rs, opA.Cs, ap + (long)ir * kc);
                    }

                    for (int jr = 0; jr < nc; jr += nr)
                    {
                        for (int ir = 0; ir < mc; ir += MR)
                        {
                            MicroKernel<TOps, TV, Yes>(kc, ap + (long)ir * kc, 1, MR, Math.Min(MR, mc - ir), bp + (long)jr * kc, nr, Math.Min(nr, nc - jr),
                                c + (ic + ir) * ldc + jc + jr, ldc, alpha, betaBlock);
                        }
                    }
                }
            }
        }
    }

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
