using System.Numerics.Tensors;

namespace Mobius.Engine.Cpu;

/// <summary>
/// Single-precision row-major GEMM on host pointers:
/// C[m x n] (row stride ldc) = alpha * op(A) * op(B) + beta * C, where op(A) is m x k (A stored k x m with
/// row stride lda when transA) and op(B) is k x n (B stored n x k when transB). beta = 0 never reads C.
/// </summary>
internal static unsafe class Sgemm
{
    /// <summary>Runs the product; <paramref name="parallel"/> allows using every thread of <paramref name="cpu"/>.</summary>
    public static void Run(CpuBackend cpu, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, bool parallel)
    {
        if (m == 0 || n == 0)
        {
            return;
        }

        // Bring B into k x n row-major form so every update is a contiguous AXPY over a row of C.
        float[]? packedB = null;
        float* bRows = b;
        int ldbRows = ldb;
        if (transB)
        {
            packedB = GC.AllocateUninitializedArray<float>(k * n);
            fixed (float* pb = packedB)
            {
                for (int j = 0; j < n; j++)
                {
                    for (int p = 0; p < k; p++)
                    {
                        pb[(long)p * n + j] = b[(long)j * ldb + p];
                    }
                }
            }
        }

        fixed (float* pb = packedB)
        {
            if (packedB is not null)
            {
                bRows = pb;
                ldbRows = n;
            }

            float* bb = bRows;
            int ldbb = ldbRows;
            void Row(int i)
            {
                var ci = new Span<float>(c + (long)i * ldc, n);
                if (beta == 0f)
                {
                    ci.Clear();
                }
                else if (beta != 1f)
                {
                    TensorPrimitives.Multiply(ci, beta, ci);
                }

                for (int p = 0; p < k; p++)
                {
                    float aip = alpha * (transA ? a[(long)p * lda + i] : a[(long)i * lda + p]);
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(bb + (long)p * ldbb, n), aip, ci, ci);
                }
            }

            if (parallel)
            {
                cpu.For(m, (double)n * k, Row);
            }
            else
            {
                for (int i = 0; i < m; i++)
                {
                    Row(i);
                }
            }
        }
    }
}
