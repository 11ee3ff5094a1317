using Xunit;

namespace Mobius.Tests;

/// <summary>Element-wise closeness |got - want| &lt;= atol + rtol |want|, with a useful failure message.</summary>
public static class Close
{
    public static void All(ReadOnlySpan<float> got, ReadOnlySpan<double> want, double atol, double rtol, string what)
    {
        Assert.True(got.Length == want.Length, $"{what}: {got.Length} values, expected {want.Length}.");
        int bad = 0;
        int firstBad = -1;
        double worst = 0;
        for (int i = 0; i < got.Length; i++)
        {
            double err = Math.Abs(got[i] - want[i]);
            double allowed = atol + rtol * Math.Abs(want[i]);
            if (!(err <= allowed))
            {
                bad++;
                if (firstBad < 0)
                {
                    firstBad = i;
                }
            }

            worst = Math.Max(worst, double.IsNaN(err) ? double.PositiveInfinity : err / allowed);
        }

        Assert.True(bad == 0,
            $"{what}: {bad} of {got.Length} values off (atol {atol}, rtol {rtol}); first at [{firstBad}]: got {(firstBad >= 0 ? got[firstBad] : 0)}, want {(firstBad >= 0 ? want[firstBad] : 0)}; worst error/allowed {worst:0.00}.");
    }

    public static void All(ReadOnlySpan<float> got, ReadOnlySpan<float> want, double atol, double rtol, string what)
    {
        var w = new double[want.Length];
        for (int i = 0; i < w.Length; i++)
        {
            w[i] = want[i];
        }

        All(got, w, atol, rtol, what);
    }
}
