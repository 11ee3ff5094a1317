using System.Runtime.CompilerServices;

namespace Mobius.Engine.Cpu;

[SkipLocalsInit]
internal static unsafe partial class Sgemm
{
    /// <summary>
    /// Rows of the micro-tile. 6 x (2 vectors) keeps 12 accumulators, 2 B vectors and 1 broadcast in the
    /// 16 vector registers of x64, and gives 12 independent FMAs per k step: enough to cover the 4-cycle
    /// FMA latency on two pipes (8 in flight) with 8 loads per 12 FMAs, under the two loads per cycle.
    /// </summary>
    internal const int MR = 6;

    /// <summary>Columns of the micro-tile: two vectors.</summary>
    internal static int NR<TOps, TV>()
        where TOps : struct, ISimdOps<TV>
        where TV : struct => 2 * TOps.Count;

    /// <summary>
    /// The micro-kernel: C[mr x nr] = alpha * op(A) * op(B) + beta * C over depth kc, with element (i, p) of
    /// op(A) at a[i*aRow + p*aStep] (rows past mr read row mr - 1 again and their sums are never stored,
    /// so A is never read out of bounds) and row p of op(B) at b[p*bStep .. + NR) (read as two full
    /// vectors, so columns past nr must be readable: packed B is zero-padded). With
    /// <typeparamref name="TPackedA"/> = <see cref="Yes"/> A is a packed panel (aRow = 1, aStep = MR,
    /// zero-padded to MR rows); the JIT then sees those strides as constants and the runtime stride
    /// arguments are ignored.
    /// </summary>
    private static void MicroKernel<TOps, TV, TPackedA>(int kc, float* a, nint aRow, nint aStep, int mr, float* b, nint bStep, int nr,
        float* c, nint ldc, float alpha, float beta)
        where TOps : struct, ISimdOps<TV>
        where TV : struct
        where TPackedA : struct, IFlag
    {
        TV c00 = TOps.Zero, c01 = TOps.Zero, c10 = TOps.Zero, c11 = TOps.Zero, c20 = TOps.Zero, c21 = TOps.Zero;
        TV c30 = TOps.Zero, c31 = TOps.Zero, c40 = TOps.Zero, c41 = TOps.Zero, c50 = TOps.Zero, c51 = TOps.Zero;
        int w = TOps.Count;

        // The C tile is needed only after the k loop; start fetching its rows (two lines each) now.
        for (int i = 0; i < mr; i++)
        {
            TOps.Prefetch(c + i * ldc);
            TOps.Prefetch(c + i * ldc + 2 * w - 1);
        }

        int rows = mr;
        if (TPackedA.Value)
        {
            (aRow, aStep, rows) = (1, MR, MR);
        }

        float* a0 = a;
        float* a1 = a + Math.Min(1, rows - 1) * aRow;
        float* a2 = a + Math.Min(2, rows - 1) * aRow;
        float* a3 = a + Math.Min(3, rows - 1) * aRow;
        float* a4 = a + Math.Min(4, rows - 1) * aRow;
        float* a5 = a + Math.Min(5, rows - 1) * aRow;
        nint off = 0;
        for (int p = 0; p < kc; p++)
        {
            TV b0 = TOps.Load(b);
            TV b1 = TOps.Load(b + w);
            TV x = TOps.Broadcast(a0 + off);
            c00 = TOps.MulAdd(x, b0, c00);
            c01 = TOps.MulAdd(x, b1, c01);
            x = TOps.Broadcast(a1 + off);
            c10 = TOps.MulAdd(x, b0, c10);
            c11 = TOps.MulAdd(x, b1, c11);
            x = TOps.Broadcast(a2 + off);
            c20 = TOps.MulAdd(x, b0, c20);
            c21 = TOps.MulAdd(x, b1, c21);
            x = TOps.Broadcast(a3 + off);
            c30 = TOps.MulAdd(x, b0, c30);
            c31 = TOps.MulAdd(x, b1, c31);
            x = TOps.Broadcast(a4 + off);
            c40 = TOps.MulAdd(x, b0, c40);
            c41 = TOps.MulAdd(x, b1, c41);
            x = TOps.Broadcast(a5 + off);
            c50 = TOps.MulAdd(x, b0, c50);
            c51 = TOps.MulAdd(x, b1, c51);
            off += aStep;
            b += bStep;
        }

        TV va = TOps.Splat(alpha);
        TV vb = TOps.Splat(beta);
        if (mr == MR && nr == 2 * w)
        {
            bool readC = beta != 0f;
            Update<TOps, TV>(c, w, c00, c01, va, vb, readC);
            Update<TOps, TV>(c + ldc, w, c10, c11, va, vb, readC);
            Update<TOps, TV>(c + 2 * ldc, w, c20, c21, va, vb, readC);
            Update<TOps, TV>(c + 3 * ldc, w, c30, c31, va, vb, readC);
            Update<TOps, TV>(c + 4 * ldc, w, c40, c41, va, vb, readC);
            Update<TOps, TV>(c + 5 * ldc, w, c50, c51, va, vb, readC);
            return;
        }

        // Edge tile: spill alpha * sums and update only the mr x nr corner that exists. A fixed local buffer,
        // not stackalloc, which would stop the JIT from inlining this body.
        int ld = 2 * w;
        Unsafe.SkipInit(out EdgeTile spill);
        float* t = (float*)Unsafe.AsPointer(ref spill[0]);
        Update<TOps, TV>(t, w, c00, c01, va, vb, false);
        Update<TOps, TV>(t + ld, w, c10, c11, va, vb, false);
        Update<TOps, TV>(t + 2 * ld, w, c20, c21, va, vb, false);
        Update<TOps, TV>(t + 3 * ld, w, c30, c31, va, vb, false);
        Update<TOps, TV>(t + 4 * ld, w, c40, c41, va, vb, false);
        Update<TOps, TV>(t + 5 * ld, w, c50, c51, va, vb, false);
        for (int i = 0; i < mr; i++)
        {
            float* ci = c + i * ldc;
            float* ti = t + i * ld;
            for (int j = 0; j < nr; j++)
            {
                ci[j] = beta == 0f ? ti[j] : ti[j] + beta * ci[j];
            }
        }
    }

    /// <summary>Two vectors of a C row: c = alpha * acc (+ beta * c when readC).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Update<TOps, TV>(float* c, int w, TV lo, TV hi, TV alpha, TV beta, bool readC)
        where TOps : struct, ISimdOps<TV>
        where TV : struct
    {
        lo = TOps.Mul(lo, alpha);
        hi = TOps.Mul(hi, alpha);
        if (readC)
        {
            lo = TOps.MulAdd(TOps.Load(c), beta, lo);
            hi = TOps.MulAdd(TOps.Load(c + w), beta, hi);
        }

        TOps.Store(c, lo);
        TOps.Store(c + w, hi);
    }
}

/// <summary>Room for one spilled micro-tile of the widest kernel (MR rows of two 512-bit vectors).</summary>
[InlineArray(Sgemm.MR * 32)]
internal struct EdgeTile
{
    private float _element;
}

/// <summary>A compile-time boolean for generic specialisation: the JIT folds <see cref="Value"/> to a constant.</summary>
internal interface IFlag
{
    static abstract bool Value { get; }
}

/// <summary>true.</summary>
internal readonly struct Yes : IFlag
{
    public static bool Value => true;
}

/// <summary>false.</summary>
internal readonly struct No : IFlag
{
    public static bool Value => false;
}
