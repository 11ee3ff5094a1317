namespace Mobius.Tests;

/// <summary>
/// Plain double-precision loop nests written from docs/ops.md, independent of the engine's code; the
/// oracle for forward outputs and (through finite differences) for gradients.
/// </summary>
public static class Reference
{
    public static double Silu(double x) => x / (1 + Math.Exp(-x));

    public static double Gelu(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    public static double[] Map(double[] x, Func<double, double> f) => x.Select(f).ToArray();

    public static double[] Linear(double[] x, double[] w, double[]? b, int rows, int inF, int outF)
    {
        var y = new double[rows * outF];
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < outF; o++)
            {
                double acc = b?[o] ?? 0;
                for (int i = 0; i < inF; i++)
                {
                    acc += x[r * inF + i] * w[o * inF + i];
                }

                y[r * outF + o] = acc;
            }
        }

        return y;
    }

    /// <summary>Batched op(A) op(B) with packed storage (A stored k x m when transA, B stored n x k when transB).</summary>
    public static double[] MatMul(double[] a, double[] b, int batch, int m, int n, int k, bool transA, bool transB)
    {
        var c = new double[batch * m * n];
        for (int t = 0; t < batch; t++)
        {
            int ao = t * m * k, bo = t * k * n;
            for (int i = 0; i < m; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    double acc = 0;
                    for (int p = 0; p < k; p++)
                    {
                        double av = transA ? a[ao + p * m + i] : a[ao + i * k + p];
                        double bv = transB ? b[bo + j * k + p] : b[bo + p * n + j];
                        acc += av * bv;
                    }

                    c[t * m * n + i * n + j] = acc;
                }
            }
        }

        return c;
    }

    public static double[] Conv2d(double[] x, double[] w, double[]? b, int n, int cin, int h, int wd, int cout, int k, int stride, int pad)
    {
        int oh = (h + 2 * pad - k) / stride + 1, ow = (wd + 2 * pad - k) / stride + 1;
        var y = new double[n * cout * oh * ow];
        for (int img = 0; img < n; img++)
        {
            for (int o = 0; o < cout; o++)
            {
                for (int p = 0; p < oh; p++)
                {
                    for (int q = 0; q < ow; q++)
                    {
                        double acc = b?[o] ?? 0;
                        for (int i = 0; i < cin; i++)
                        {
                            for (int u = 0; u < k; u++)
                            {
                                for (int v = 0; v < k; v++)
                                {
                                    int yy = p * stride + u - pad, xx = q * stride + v - pad;
                                    if (yy >= 0 && yy < h && xx >= 0 && xx < wd)
                                    {
                                        acc += w[((o * cin + i) * k + u) * k + v] * x[((img * cin + i) * h + yy) * wd + xx];
                                    }
                                }
                            }
                        }

                        y[((img * cout + o) * oh + p) * ow + q] = acc;
                    }
                }
            }
        }

        return y;
    }

    public static double[] TemporalConv(double[] x, double[] w, double[]? b, int batch, int f, int cin, int cout, int s)
    {
        var y = new double[batch * f * cout * s];
        for (int bb = 0; bb < batch; bb++)
        {
            for (int t = 0; t < f; t++)
            {
                for (int o = 0; o < cout; o++)
                {
                    for (int p = 0; p < s; p++)
                    {
                        double acc = b?[o] ?? 0;
                        for (int i = 0; i < cin; i++)
                        {
                            for (int k = 0; k < 3; k++)
                            {
                                int src = t + k - 1;
                                if (src >= 0 && src < f)
                                {
                                    acc += w[(o * cin + i) * 3 + k] * x[((bb * f + src) * cin + i) * s + p];
                                }
                            }
                        }

                        y[((bb * f + t) * cout + o) * s + p] = acc;
                    }
                }
            }
        }

        return y;
    }

    public static double[] GroupNorm(double[] x, double[] gamma, double[] beta, int n, int t, int c, int s, int groups, double eps, bool silu)
    {
        var y = new double[x.Length];
        int cpg = c / groups;
        for (int nn = 0; nn < n; nn++)
        {
            for (int g = 0; g < groups; g++)
            {
                var idx = new List<(int Index, int Channel)>();
                for (int tt = 0; tt < t; tt++)
                {
                    for (int cc = g * cpg; cc < (g + 1) * cpg; cc++)
                    {
                        for (int p = 0; p < s; p++)
                        {
                            idx.Add(((((nn * t) + tt) * c + cc) * s + p, cc));
                        }
                    }
                }

                double mean = idx.Average(e => x[e.Index]);
                double var = idx.Average(e => (x[e.Index] - mean) * (x[e.Index] - mean));
                double rstd = 1 / Math.Sqrt(var + eps);
                foreach (var (i, cc) in idx)
                {
                    double v = (x[i] - mean) * rstd * gamma[cc] + beta[cc];
                    y[i] = silu ? Silu(v) : v;
                }
            }
        }

        return y;
    }

    public static double[] LayerNorm(double[] x, double[] gamma, double[] beta, int rows, int cols, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            var row = x.Skip(r * cols).Take(cols).ToArray();
            double mean = row.Average();
            double var = row.Average(v => (v - mean) * (v - mean));
            double rstd = 1 / Math.Sqrt(var + eps);
            for (int j = 0; j < cols; j++)
            {
                y[r * cols + j] = (row[j] - mean) * rstd * gamma[j] + beta[j];
            }
        }

        return y;
    }

    public static double[] Geglu(double[] x, int rows, int hidden)
    {
        var y = new double[rows * hidden];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < hidden; j++)
            {
                y[r * hidden + j] = x[r * 2 * hidden + j] * Gelu(x[r * 2 * hidden + hidden + j]);
            }
        }

        return y;
    }

    public static double[] Softmax(double[] x, int rows, int cols)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double max = double.NegativeInfinity;
            for (int j = 0; j < cols; j++)
            {
                max = Math.Max(max, x[r * cols + j]);
            }

            double sum = 0;
            for (int j = 0; j < cols; j++)
            {
                sum += Math.Exp(x[r * cols + j] - max);
            }

            for (int j = 0; j < cols; j++)
            {
                y[r * cols + j] = Math.Exp(x[r * cols + j] - max) / sum;
            }
        }

        return y;
    }

    /// <summary>Multi-head attention; returns the output and the log-sum-exp [N, H, Lq].</summary>
    public static (double[] O, double[] Lse) Attention(double[] q, double[] k, double[] v, int n, int lq, int lk, int heads, int d)
    {
        int w = heads * d;
        double scale = 1 / Math.Sqrt(d);
        var o = new double[n * lq * w];
        var lse = new double[n * heads * lq];
        var sc = new double[lk];
        for (int nn = 0; nn < n; nn++)
        {
            for (int h = 0; h < heads; h++)
            {
                for (int i = 0; i < lq; i++)
                {
                    double max = double.NegativeInfinity;
                    for (int j = 0; j < lk; j++)
                    {
                        double acc = 0;
                        for (int e = 0; e < d; e++)
                        {
                            acc += q[(nn * lq + i) * w + h * d + e] * k[(nn * lk + j) * w + h * d + e];
                        }

                        sc[j] = acc * scale;
                        max = Math.Max(max, sc[j]);
                    }

                    double sum = 0;
                    for (int j = 0; j < lk; j++)
                    {
                        sum += Math.Exp(sc[j] - max);
                    }

                    lse[(nn * heads + h) * lq + i] = max + Math.Log(sum);
                    for (int e = 0; e < d; e++)
                    {
                        double acc = 0;
                        for (int j = 0; j < lk; j++)
                        {
                            acc += Math.Exp(sc[j] - max) / sum * v[(nn * lk + j) * w + h * d + e];
                        }

                        o[(nn * lq + i) * w + h * d + e] = acc;
                    }
                }
            }
        }

        return (o, lse);
    }

    public static double[] AvgPool2x2(double[] x, int planes, int h, int w)
    {
        var y = new double[planes * (h / 2) * (w / 2)];
        for (int p = 0; p < planes; p++)
        {
            for (int i = 0; i < h / 2; i++)
            {
                for (int j = 0; j < w / 2; j++)
                {
                    double s = 0;
                    for (int u = 0; u < 2; u++)
                    {
                        for (int v = 0; v < 2; v++)
                        {
                            s += x[(p * h + 2 * i + u) * w + 2 * j + v];
                        }
                    }

                    y[(p * (h / 2) + i) * (w / 2) + j] = s / 4;
                }
            }
        }

        return y;
    }

    public static double[] Upsample2x(double[] x, int planes, int h, int w)
    {
        var y = new double[planes * 4 * h * w];
        for (int p = 0; p < planes; p++)
        {
            for (int i = 0; i < 2 * h; i++)
            {
                for (int j = 0; j < 2 * w; j++)
                {
                    y[(p * 2 * h + i) * 2 * w + j] = x[(p * h + i / 2) * w + j / 2];
                }
            }
        }

        return y;
    }

    /// <summary>Transpose of the last two dimensions of [batch, rows, cols].</summary>
    public static double[] Transpose(double[] x, int batch, int rows, int cols)
    {
        var y = new double[x.Length];
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < rows; i++)
            {
                for (int j = 0; j < cols; j++)
                {
                    y[(b * cols + j) * rows + i] = x[(b * rows + i) * cols + j];
                }
            }
        }

        return y;
    }
}

/// <summary>Central finite differences in double precision.</summary>
public static class FiniteDifference
{
    /// <summary>dL/dx for a scalar function L, by (L(x + h e_i) - L(x - h e_i)) / 2h.</summary>
    public static double[] Gradient(Func<double[], double> loss, double[] x, double h = 1e-5)
    {
        var grad = new double[x.Length];
        var probe = (double[])x.Clone();
        for (int i = 0; i < x.Length; i++)
        {
            double keep = probe[i];
            probe[i] = keep + h;
            double up = loss(probe);
            probe[i] = keep - h;
            double down = loss(probe);
            probe[i] = keep;
            grad[i] = (up - down) / (2 * h);
        }

        return grad;
    }

    public static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++)
        {
            s += a[i] * b[i];
        }

        return s;
    }
}
