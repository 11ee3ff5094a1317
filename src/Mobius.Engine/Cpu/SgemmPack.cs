using System.Runtime.Intrinsics;

namespace Mobius.Engine.Cpu;

internal static unsafe partial class Sgemm
{
    /// <summary>
    /// Packs a sliver of <paramref name="width"/> lines by <paramref name="kc"/> into dst[p*width + r] =
    /// src[r*lineStride + p*depthStride], zero for lines r in [lines, width). The same routine packs A row
    /// panels (lines = rows of op(A)) and B column panels (lines = columns of op(B)), whatever the
    /// transposition: only which stride is 1 changes.
    /// </summary>
    private static void PackPanel(int width, int lines, int kc, float* src, nint lineStride, nint depthStride, float* dst)
    {
        if (lineStride == 1)
        {
            // Each depth step is a contiguous run of lines: one short vector copy per step.
            for (int p = 0; p < kc; p++)
            {
                float* s = src + p * depthStride;
                float* d = dst + (long)p * width;
                int r = 0;
                for (; r + 4 <= lines; r += 4)
                {
                    Vector128.Load(s + r).Store(d + r);
                }

                for (; r < lines; r++)
                {
                    d[r] = s[r];
                }
            }
        }
        else
        {
            // Each line is a run of depth (or a fully strided view): walk lines, scatter with stride width.
            for (int r = 0; r < lines; r++)
            {
                float* s = src + r * lineStride;
                float* d = dst + r;
                for (int p = 0; p < kc; p++)
                {
                    d[(long)p * width] = s[p * depthStride];
                }
            }
        }

        if (lines < width)
        {
            for (int p = 0; p < kc; p++)
            {
                new Span<float>(dst + (long)p * width + lines, width - lines).Clear();
            }
        }
    }
}
