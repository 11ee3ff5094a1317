using System.Text.Json.Serialization;

namespace Mobius.Model.Training;

/// <summary>
/// The mean of paired differences (parallel minus serial, one pair per held-out clip or per sampled prompt,
/// both topologies given the same clip, timestep and noise, or the same prompt and starting noise), with its
/// standard error and a 95 % confidence interval from Student's t with pairs - 1 degrees of freedom. Pairing
/// takes out what the two share (a clip's timestep moves both losses alike), so the interval says whether the
/// topologies differ by more than the run can tell apart.
/// </summary>
/// <param name="Mean">Mean of parallel minus serial.</param>
/// <param name="StandardError">Sample standard deviation of the differences over the square root of <paramref name="Pairs"/>.</param>
/// <param name="Low">Lower end of the 95 % interval.</param>
/// <param name="High">Upper end of the 95 % interval.</param>
/// <param name="Pairs">Pairs the mean is over.</param>
public sealed record PairedDifference(
    [property: JsonPropertyName("mean")] double Mean,
    [property: JsonPropertyName("standard_error")] double StandardError,
    [property: JsonPropertyName("low")] double Low,
    [property: JsonPropertyName("high")] double High,
    [property: JsonPropertyName("pairs")] int Pairs)
{
    /// <summary>Whether the interval holds 0: the run cannot tell the two apart on this measure.</summary>
    [JsonIgnore]
    public bool IncludesZero => Low <= 0 && High >= 0;

    /// <summary>
    /// Parallel minus serial over the pairs where both values are there and finite (a sample whose caption names
    /// no motion has no score); null with fewer than two such pairs, where there is no spread to estimate.
    /// </summary>
    public static PairedDifference? Of(IReadOnlyList<double?> serial, IReadOnlyList<double?> parallel)
    {
        ArgumentNullException.ThrowIfNull(serial);
        ArgumentNullException.ThrowIfNull(parallel);
        if (serial.Count != parallel.Count)
        {
            throw new ArgumentException($"paired values need the same count: serial has {serial.Count}, parallel {parallel.Count}.", nameof(parallel));
        }

        var d = new List<double>(serial.Count);
        for (int i = 0; i < serial.Count; i++)
        {
            if (serial[i] is double s && parallel[i] is double p && double.IsFinite(s) && double.IsFinite(p))
            {
                d.Add(p - s);
            }
        }

        if (d.Count < 2)
        {
            return null;
        }

        double mean = d.Average();
        double sumSq = d.Sum(x => (x - mean) * (x - mean));
        double se = Math.Sqrt(sumSq / (d.Count - 1) / d.Count);
        double half = StudentT(0.975, d.Count - 1) * se;
        return new PairedDifference(mean, se, mean - half, mean + half, d.Count);
    }

    /// <summary>The same for values that are all there.</summary>
    public static PairedDifference? Of(IReadOnlyList<double> serial, IReadOnlyList<double> parallel) =>
        Of(serial.Select(v => (double?)v).ToList(), parallel.Select(v => (double?)v).ToList());

    /// <summary>
    /// The <paramref name="p"/>-quantile (0.5 &lt; p &lt; 1) of Student's t with <paramref name="degrees"/> degrees of
    /// freedom. With x = sqrt(nu) tan(theta) the t density becomes proportional to cos(theta)^(nu - 1), so
    /// P(0 &lt; T &lt; t) is the share of that power's integral over [0, pi/2] that lies below atan(t / sqrt(nu)):
    /// one cumulative trapezoid sum over a fine grid, read where the share reaches 2p - 1.
    /// </summary>
    public static double StudentT(double p, int degrees)
    {
        if (!(p > 0.5 && p < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(p), $"the quantile must lie in (0.5, 1), got {p}.");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(degrees, 1);
        double nu = degrees;

        // cos^(nu-1) ~ exp(-(nu-1) theta^2 / 2): beyond 12 of its widths nothing is left to integrate.
        double top = degrees <= 2 ? Math.PI / 2 : Math.Min(Math.PI / 2, 12 / Math.Sqrt(nu - 1));
        const int n = 8192;
        double h = top / n;
        var cumulative = new double[n + 1];
        double previous = 1;  // cos(0)^(nu-1)
        for (int i = 1; i <= n; i++)
        {
            double f = Math.Pow(Math.Cos(i * h), nu - 1);
            cumulative[i] = cumulative[i - 1] + (previous + f) * h / 2;
            previous = f;
        }

        double target = (2 * p - 1) * cumulative[n];
        int k = Array.BinarySearch(cumulative, target);
        k = k >= 0 ? k : ~k;  // the first point at or above the target
        double theta = k == 0 ? 0 : (k - 1 + (target - cumulative[k - 1]) / (cumulative[k] - cumulative[k - 1])) * h;
        return Math.Sqrt(nu) * Math.Tan(theta);
    }
}
