using Mobius.Data;
using Mobius.Engine;
using Mobius.Model.Layers;

namespace Mobius.Model;

/// <summary>Parameter counts of a configuration, measured by building it on the <see cref="MetaBackend"/>.</summary>
/// <param name="Spatial">Text-to-image UNet.</param>
/// <param name="Text">Text encoder.</param>
/// <param name="SerialTrainable">Temporal layers of the serial model.</param>
/// <param name="ParallelTrainable">Temporal layers, ring adapters and bridges of the parallel model.</param>
public sealed record ParameterCounts(long Spatial, long Text, long SerialTrainable, long ParallelTrainable)
{
    /// <summary>All parameters of the serial model (UNet and text encoder).</summary>
    public long Total => Spatial + Text + SerialTrainable;

    /// <summary>Counts parameters without allocating or initialising any.</summary>
    public static ParameterCounts Of(ModelConfig config)
    {
        using var meta = new MetaBackend();
        using var serial = new UNet3D(meta, config, Topology.Serial, 0);
        using var parallel = new UNet3D(meta, config, Topology.Parallel, 0);
        using var text = new TextEncoder(meta, new Random(0), Tokenizer.ForEmoji(config.TokenLength).VocabularySize, config.TokenLength,
            config.TextWidth, config.TextLayers, config.TextHeads);
        return new ParameterCounts(
            serial.SpatialParameters().Sum(p => p.Parameter.Numel),
            text.ParameterCount(),
            serial.TemporalParameters().Sum(p => p.Parameter.Numel),
            parallel.TemporalParameters().Sum(p => p.Parameter.Numel));
    }
}
