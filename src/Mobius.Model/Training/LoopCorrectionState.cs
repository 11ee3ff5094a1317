using System.Text.Json;
using System.Text.Json.Serialization;

namespace Mobius.Model.Training;

/// <summary>One parameter tensor's running means in <see cref="LoopCorrectionMode.Scale"/>.</summary>
/// <param name="Covariance">Running mean of &lt;exact, loop&gt;.</param>
/// <param name="Variance">Running mean of &lt;loop, loop&gt;.</param>
public readonly record struct LoopScaleFit(double Covariance, double Variance);

/// <summary>
/// What the loop correction (<see cref="TrainOptions.LoopCorrectionEvery"/>) has measured so far, by trainable
/// parameter name: kept in a trainer's checkpoint so that a resumed run corrects its steps as the uninterrupted
/// run would have.
/// </summary>
public sealed class LoopCorrectionState
{
    /// <summary>Creates the state.</summary>
    public LoopCorrectionState(LoopCorrectionMode mode, int folds, IReadOnlyDictionary<string, LoopScaleFit> fits, IReadOnlyDictionary<string, float[]> bias)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(folds);
        Mode = mode;
        Folds = folds;
        Fits = fits;
        Bias = bias;
    }

    /// <summary>The mode that measured it.</summary>
    public LoopCorrectionMode Mode { get; }

    /// <summary>Exact steps folded in so far.</summary>
    public int Folds { get; }

    /// <summary><see cref="LoopCorrectionMode.Scale"/>: each tensor's running means (empty in the mean mode).</summary>
    public IReadOnlyDictionary<string, LoopScaleFit> Fits { get; }

    /// <summary>
    /// <see cref="LoopCorrectionMode.Mean"/>: each tensor's running loop-minus-exact difference, an exponential
    /// mean from zero before debiasing (empty in the scale mode).
    /// </summary>
    public IReadOnlyDictionary<string, float[]> Bias { get; }

    /// <summary>The checkpoint metadata entry (the bias tensors are stored beside it).</summary>
    internal string MetadataJson() => JsonSerializer.Serialize(new Recorded(
        Mode.ToString().ToLowerInvariant(), Folds, Fits.ToDictionary(kv => kv.Key, kv => new[] { kv.Value.Covariance, kv.Value.Variance })));

    /// <summary>Reads <see cref="MetadataJson"/>'s entry and the bias tensors stored beside it.</summary>
    /// <exception cref="FormatException">The entry is malformed.</exception>
    internal static LoopCorrectionState FromMetadata(string json, IReadOnlyDictionary<string, float[]> bias)
    {
        var r = JsonSerializer.Deserialize<Recorded>(json) ?? throw new FormatException("the loop correction entry is null.");
        if (!Enum.TryParse<LoopCorrectionMode>(r.Mode, ignoreCase: true, out var mode) || r.Folds < 0)
        {
            throw new FormatException($"the loop correction entry has mode '{r.Mode}' and {r.Folds} folds.");
        }

        var fits = new Dictionary<string, LoopScaleFit>();
        foreach (var (name, pair) in r.Fits ?? [])
        {
            fits[name] = pair is [var covariance, var variance] && variance >= 0
                ? new LoopScaleFit(covariance, variance)
                : throw new FormatException($"the loop correction fit of '{name}' is not [covariance, variance >= 0].");
        }

        return new LoopCorrectionState(mode, r.Folds, fits, bias);
    }

    private sealed record Recorded(
        [property: JsonPropertyName("mode")] string? Mode,
        [property: JsonPropertyName("folds")] int Folds,
        [property: JsonPropertyName("fits")] Dictionary<string, double[]>? Fits);
}
