using System.Text.Json;
using System.Text.Json.Serialization;

namespace Mobius.Model;

/// <summary>
/// Shape of a text-to-video UNet and of the clips it trains on. Named presets: <c>micro</c> (tests),
/// <c>tiny</c> (the CPU demo), <c>small</c>, and <c>ms256</c> (ModelScope-T2V shaped, for GPU benchmarks).
/// </summary>
public sealed record ModelConfig
{
    /// <summary>Preset name.</summary>
    public required string Name { get; init; }

    /// <summary>Channels of each resolution level, highest resolution first.</summary>
    public required int[] Channels { get; init; }

    /// <summary>Residual blocks per level on the way down (the way up has one more, for the extra skip).</summary>
    public int LayersPerLevel { get; init; } = 1;

    /// <summary>Which levels have spatial and temporal transformers.</summary>
    public required bool[] Attention { get; init; }

    /// <summary>Channels per attention head.</summary>
    public int HeadDim { get; init; } = 32;

    /// <summary>Group-norm groups.</summary>
    public int Groups { get; init; } = 8;

    /// <summary>Feed-forward expansion of transformer blocks (GEGLU inner width = mult x channels).</summary>
    public int FfMult { get; init; } = 4;

    /// <summary>Width of the text encoder and of the cross-attention context.</summary>
    public int TextWidth { get; init; } = 64;

    /// <summary>Transformer layers of the text encoder.</summary>
    public int TextLayers { get; init; } = 2;

    /// <summary>Attention heads of the text encoder.</summary>
    public int TextHeads { get; init; } = 2;

    /// <summary>Tokens per caption (padded).</summary>
    public int TokenLength { get; init; } = 12;

    /// <summary>Frames per clip.</summary>
    public int Frames { get; init; } = 8;

    /// <summary>Clip height in pixels.</summary>
    public int Height { get; init; } = 32;

    /// <summary>Clip width in pixels.</summary>
    public int Width { get; init; } = 32;

    /// <summary>Clips per training batch.</summary>
    public int Batch { get; init; } = 2;

    /// <summary>Latent channels: the space-to-depth codec turns 3 colour channels into 12.</summary>
    public int LatentChannels { get; init; } = 12;

    /// <summary>Latent height (pixels / 2).</summary>
    [JsonIgnore]
    public int LatentHeight => Height / 2;

    /// <summary>Latent width (pixels / 2).</summary>
    [JsonIgnore]
    public int LatentWidth => Width / 2;

    /// <summary>
    /// Correlation of the diffusion noise across the frames of a clip (stage 2 training and video
    /// sampling; see <see cref="Diffusion.NoiseSchedule.ClipNoise"/>). 0: independent frames. A stage-2
    /// choice: text-to-image checkpoints load with <see cref="DefaultFrameNoiseCorrelation"/>.
    /// </summary>
    public float FrameNoiseCorrelation { get; init; } = DefaultFrameNoiseCorrelation;

    /// <summary>
    /// The frame noise correlation of a new text-to-video model: 0.9. Less correlation gives the frozen
    /// image model more room to draw each frame differently: at 0.7 and 0.5 the samples' frames agreed
    /// less after the same training and their combined motion score was lower
    /// (benchmarks/results/2026-11-26-motion-training-settings.md). At 0 serial learns to move sprites
    /// across the clip after a few thousand clips, but the loop bridge's validation loss rises
    /// (benchmarks/results/2026-11-26-frame-noise-0.md): the default serves the comparison of both.
    /// </summary>
    public const float DefaultFrameNoiseCorrelation = 0.9f;

    /// <summary>
    /// The reading of the parallel topology's bridges: "loop" (the default: each block's temporal layers
    /// feed back into the spatial chain, gradients run through the temporal layers and the chain's skip
    /// paths), or a separate ring ("additive": t + s', "skip": t + s' with the ring's own skip connections,
    /// "delta": skip, the ring carrying only the temporal layers' corrections, "gated": s' + g * t,
    /// "mixing": t + s' and a trainable 3x3 convolution per block) read out by a fuse at the end.
    /// A stage-2 choice: text-to-image checkpoints load with any bridge.
    /// </summary>
    public string Bridge { get; init; } = DefaultBridge;

    /// <summary>The bridge a text-to-video model gets unless told otherwise.</summary>
    public const string DefaultBridge = "loop";

    /// <summary>The bridge names <see cref="Validate"/> accepts.</summary>
    public static IReadOnlyList<string> Bridges { get; } = ["loop", "additive", "skip", "delta", "gated", "mixing"];

    /// <summary>Checks internal consistency; throws <see cref="ArgumentException"/> naming the problem.</summary>
    public void Validate()
    {
        void Need(bool ok, string what)
        {
            if (!ok)
            {
                throw new ArgumentException($"config '{Name}': {what}");
            }
        }

        Need(Channels.Length >= 1 && Channels.All(c => c > 0), "channels must be positive.");
        Need(Attention.Length == Channels.Length, "one attention flag per level.");
        Need(Channels.All(c => c % Groups == 0), $"every channel count must be a multiple of {Groups} groups.");
        Need(Channels.Where((c, i) => Attention[i]).All(c => c % HeadDim == 0), $"attention channels must be multiples of head dim {HeadDim}.");
        Need(TextWidth % TextHeads == 0, "text width must split into text heads.");
        Need(Frames is >= 1 and <= 32, "frames must be 1..32 (temporal attention kernel limit).");
        int factor = 2 << (Channels.Length - 1);
        Need(Height % factor == 0 && Width % factor == 0, $"height and width must be multiples of {factor} for {Channels.Length} levels.");
        Need(LayersPerLevel >= 1 && Batch >= 1 && TokenLength >= 3, "layers, batch and token length must be positive.");
        Need(Bridges.Contains(Bridge), $"unknown bridge '{Bridge}'; known: {string.Join(", ", Bridges)}.");
        Need(FrameNoiseCorrelation is >= 0f and < 1f, "frame noise correlation must be in [0, 1).");
    }

    /// <summary>JSON form, stored in checkpoints.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Reads the JSON form.</summary>
    public static ModelConfig FromJson(string json) =>
        JsonSerializer.Deserialize<ModelConfig>(json, JsonOptions) ?? throw new InvalidDataException("empty model config.");

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>The named presets.</summary>
    public static IReadOnlyList<ModelConfig> Presets { get; } =
    [
        new()
        {
            Name = "micro", Channels = [16, 32], Attention = [true, true], HeadDim = 8, Groups = 4, TextWidth = 16, TextLayers = 1,
            TextHeads = 2, TokenLength = 14, Frames = 4, Height = 16, Width = 16, Batch = 2,
        },
        new()
        {
            Name = "tiny", Channels = [32, 64, 64], Attention = [true, true, true], HeadDim = 32, Groups = 8, TextWidth = 64, TextLayers = 2,
            TextHeads = 2, TokenLength = 16, Frames = 8, Height = 32, Width = 32, Batch = 2,
        },
        new()
        {
            Name = "small", Channels = [64, 128, 256], LayersPerLevel = 2, Attention = [true, true, true], HeadDim = 32, Groups = 16,
            TextWidth = 256, TextLayers = 2, TextHeads = 4, TokenLength = 16, Frames = 16, Height = 64, Width = 64, Batch = 2,
        },
        new()
        {
            Name = "ms256", Channels = [320, 640, 1280, 1280], LayersPerLevel = 2, Attention = [true, true, true, false], HeadDim = 64,
            Groups = 32, TextWidth = 1024, TextLayers = 2, TextHeads = 16, TokenLength = 77, Frames = 16, Height = 64, Width = 64, Batch = 1,
        },
    ];

    /// <summary>A preset by name; throws <see cref="ArgumentException"/> listing the known names.</summary>
    public static ModelConfig Get(string name) =>
        Presets.FirstOrDefault(p => p.Name.Equals(name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"unknown config '{name}'; known configs: {string.Join(", ", Presets.Select(p => p.Name))}.");
}
