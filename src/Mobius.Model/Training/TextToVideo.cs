using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Model.Diffusion;
using Mobius.Model.Layers;

namespace Mobius.Model.Training;

/// <summary>
/// Everything needed to train or sample a text-to-video model: the UNet in one topology, the text
/// encoder, the tokenizer, the latent codec and the noise schedule, on one backend.
/// </summary>
public sealed class TextToVideo : IDisposable
{
    private TextToVideo(IBackend backend, ModelConfig config, Topology topology, Tokenizer tokenizer, SpaceToDepthCodec codec, int seed)
    {
        Backend = backend;
        Config = config;
        Topology = topology;
        Tokenizer = tokenizer;
        Codec = codec;
        Unet = new UNet3D(backend, config, topology, seed);
        Text = new TextEncoder(backend, new Random(seed ^ 0x5bd1e995), tokenizer.VocabularySize, config.TokenLength, config.TextWidth, config.TextLayers, config.TextHeads);
    }

    /// <summary>The backend holding the weights.</summary>
    public IBackend Backend { get; }

    /// <summary>The configuration.</summary>
    public ModelConfig Config { get; }

    /// <summary>How temporal layers are wired.</summary>
    public Topology Topology { get; }

    /// <summary>The denoising UNet.</summary>
    public UNet3D Unet { get; }

    /// <summary>The text encoder.</summary>
    public TextEncoder Text { get; }

    /// <summary>Caption tokenizer.</summary>
    public Tokenizer Tokenizer { get; }

    /// <summary>Pixels to latents and back.</summary>
    public SpaceToDepthCodec Codec { get; }

    /// <summary>The DDPM schedule.</summary>
    public NoiseSchedule Schedule { get; } = new();

    /// <summary>A freshly initialised model (the emoji tokenizer and codec unless given).</summary>
    public static TextToVideo Create(IBackend backend, ModelConfig config, Topology topology, int seed, Tokenizer? tokenizer = null, SpaceToDepthCodec? codec = null)
    {
        config.Validate();
        return new TextToVideo(backend, config, topology, tokenizer ?? Tokenizer.ForEmoji(config.TokenLength), codec ?? new SpaceToDepthCodec(), seed);
    }

    /// <summary>
    /// A model from a checkpoint in <paramref name="topology"/>. A text-to-image checkpoint loads into any
    /// topology (the temporal layers start from their initialisation, the identity); a text-to-video
    /// checkpoint into its own topology, and a serial one into the parallel topology with the loop bridge
    /// and back (the loop is serial's model, parameter for parameter: fine-tuning a text-to-video model in
    /// either topology, as the paper does). The parallel topology's <paramref name="bridge"/> is a
    /// stage-2 choice (null: <see cref="ModelConfig.DefaultBridge"/>), as is the frame noise correlation
    /// (<paramref name="frameNoiseCorrelation"/>, null: <see cref="ModelConfig.DefaultFrameNoiseCorrelation"/>);
    /// a text-to-video checkpoint keeps its own and rejects a different one.
    /// </summary>
    public static TextToVideo Load(IBackend backend, Checkpoint checkpoint, Topology topology, int seed, string? bridge = null, float? frameNoiseCorrelation = null)
    {
        if (checkpoint.Topology != Topology.Spatial && checkpoint.Topology != topology && !SharesSerialModel(checkpoint, topology, bridge))
        {
            throw new InvalidDataException(
                $"a {checkpoint.Topology} checkpoint{(checkpoint.Topology == Topology.Parallel ? $" with the {checkpoint.Config.Bridge} bridge" : "")} cannot be loaded as {topology}" +
                $"{(topology == Topology.Parallel ? $" with the {bridge ?? checkpoint.Config.Bridge} bridge" : "")}; text-to-image checkpoints load into any topology, " +
                "and serial and loop-bridge checkpoints into each other.");
        }

        var config = checkpoint.Config;
        if (checkpoint.Topology == Topology.Serial && topology == Topology.Parallel)
        {
            config = config with { Bridge = "loop" };
        }

        if (checkpoint.Topology == Topology.Spatial)
        {
            config = config with { Bridge = bridge ?? ModelConfig.DefaultBridge, FrameNoiseCorrelation = frameNoiseCorrelation ?? ModelConfig.DefaultFrameNoiseCorrelation };
        }
        else if (frameNoiseCorrelation is { } rho && rho != config.FrameNoiseCorrelation)
        {
            throw new InvalidDataException($"the checkpoint was trained with frame noise correlation {config.FrameNoiseCorrelation}; it cannot continue or sample with {rho}.");
        }
        else if (bridge is not null && bridge != config.Bridge && topology == Topology.Parallel && checkpoint.Topology == Topology.Parallel)
        {
            throw new InvalidDataException($"the checkpoint was trained with the {config.Bridge} bridge; it cannot continue with the {bridge} bridge.");
        }

        config.Validate();
        var tokenizer = Tokenizer.FromVocabulary(checkpoint.Vocabulary, config.TokenLength);
        var codec = new SpaceToDepthCodec(checkpoint.CodecScales, checkpoint.CodecShifts);
        var model = new TextToVideo(backend, config, topology, tokenizer, codec, seed);
        try
        {
            var loaded = model.Unet.LoadStateDict(checkpoint.Unet, strict: false);
            var unexpected = checkpoint.Unet.Keys.Except(loaded).ToList();
            var missing = model.Unet.NamedParameters().Select(n => n.Name).Except(loaded)
                .Where(n => checkpoint.Topology != Topology.Spatial || !UNet3D.IsTemporal(n)).ToList();
            if (unexpected.Count > 0 || missing.Count > 0)
            {
                throw new InvalidDataException($"checkpoint does not match the {checkpoint.Config.Name} UNet: missing [{string.Join(", ", missing.Take(5))}], unexpected [{string.Join(", ", unexpected.Take(5))}].");
            }

            model.Text.LoadStateDict(checkpoint.Text);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Whether a text-to-video <paramref name="checkpoint"/> of the other topology holds exactly the parameters
    /// <paramref name="topology"/> needs: serial into the parallel topology with the loop bridge (the
    /// <paramref name="bridge"/> asked for, or the default), or a loop-bridge checkpoint into serial.
    /// </summary>
    public static bool SharesSerialModel(Checkpoint checkpoint, Topology topology, string? bridge = null) =>
        (checkpoint.Topology, topology) switch
        {
            (Topology.Serial, Topology.Parallel) => (bridge ?? ModelConfig.DefaultBridge) == "loop",
            (Topology.Parallel, Topology.Serial) => checkpoint.Config.Bridge == "loop",
            _ => false,
        };

    /// <summary>Stage 2: freezes the text-to-image UNet and the text encoder; only temporal layers (and bridges) train.</summary>
    public void FreezeForVideo()
    {
        Unet.FreezeSpatial();
        Text.Freeze();
    }

    /// <summary>
    /// The text context of each image: captions encoded once, each repeated for the
    /// <paramref name="frames"/> images of its clip: [captions * frames, L, D].
    /// </summary>
    public Tensor EncodeText(IReadOnlyList<string> captions, int frames, bool strict = true)
    {
        var ids = captions.SelectMany(c => Tokenizer.Encode(c, strict)).ToArray();
        using var ctx = Text.Forward(ids);
        if (frames == 1)
        {
            return Ops.Reshape(ctx, ctx.Shape.ToArray());
        }

        var rows = new List<Tensor>();
        try
        {
            for (int b = 0; b < captions.Count; b++)
            {
                var one = Ops.Narrow(ctx, 0, b, 1);
                rows.Add(one);
                for (int f = 1; f < frames; f++)
                {
                    rows.Add(Ops.Reshape(one, one.Shape.ToArray()));
                }
            }

            return Ops.Concat(0, rows.ToArray());
        }
        finally
        {
            foreach (var r in rows)
            {
                r.Dispose();
            }
        }
    }

    /// <summary>
    /// Correlation across a clip's frames of the noise sampling starts from, unless asked otherwise: 0.9, or the
    /// model's training correlation (<see cref="ModelConfig.FrameNoiseCorrelation"/>) where that is higher. Even a
    /// model trained with independent frame noise draws steadier clips from correlated starting noise: at the
    /// first DDIM step its prediction reads the layout (background, where a sprite is) off the noise, and
    /// independent noise gives every frame its own (benchmarks/results/2026-11-27-sampling-noise.md).
    /// </summary>
    public const float DefaultSampleFrameNoise = 0.9f;

    /// <summary>
    /// The starting-noise correlation <see cref="Generate"/> uses for <paramref name="requested"/> (null: the
    /// larger of <see cref="DefaultSampleFrameNoise"/> and the training correlation); 0 for a text-to-image model.
    /// </summary>
    public float SampleFrameNoise(float? requested = null) => SampleFrameNoiseFor(Topology, Config, requested);

    /// <summary><see cref="SampleFrameNoise"/> for a model of <paramref name="topology"/> and <paramref name="config"/> (a checkpoint's, say).</summary>
    public static float SampleFrameNoiseFor(Topology topology, ModelConfig config, float? requested = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (requested is { } rho && !(rho >= 0 && rho < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(requested), $"the sampling frame noise correlation must be in [0, 1), got {rho}.");
        }

        return topology == Topology.Spatial ? 0f : requested ?? Math.Max(DefaultSampleFrameNoise, config.FrameNoiseCorrelation);
    }

    /// <summary>
    /// Samples one clip per prompt with DDIM and classifier-free guidance; returns pixels
    /// [prompts, F, 3, H, W] in [-1, 1] (clamped). Each clip starts from noise whose frames are correlated
    /// <paramref name="frameNoise"/> (<see cref="SampleFrameNoise"/>; null: the default). Unknown words in a
    /// prompt raise <see cref="UnknownWordsException"/>.
    /// </summary>
    public float[] Generate(IReadOnlyList<string> prompts, int steps = 25, float guidance = 4f, int seed = 0, IProgress<int>? progress = null, float? frameNoise = null)
    {
        float correlation = SampleFrameNoise(frameNoise);
        int frames = Topology == Topology.Spatial ? 1 : Config.Frames;
        using var noGrad = Tape.NoGrad();
        using var cond = EncodeText(prompts, frames);
        using var uncond = EncodeText(Enumerable.Repeat("", prompts.Count).ToList(), frames);
        var shape = new Shape(prompts.Count * frames, Config.LatentChannels, Config.LatentHeight, Config.LatentWidth);
        var latents = new DdimSampler(Schedule).Sample(Backend, shape, DdimSampler.Guided(Unet, cond, uncond, frames, guidance), steps, seed, progress,
            frames, correlation);
        var pixels = Codec.Decode(latents, prompts.Count * frames, Config.Height, Config.Width);
        for (int i = 0; i < pixels.Length; i++)
        {
            pixels[i] = Math.Clamp(pixels[i], -1f, 1f);
        }

        return pixels;
    }

    /// <summary>Saves weights (and optimiser state) with their metadata, atomically.</summary>
    public void Save(string path, int step, int seed, Mobius.Engine.Optim.AdamW? optimizer = null, IReadOnlyDictionary<string, string>? extra = null,
        TrainOptions? trainOptions = null, LoopCorrectionState? loopCorrection = null, IReadOnlyDictionary<string, float[]>? ema = null) =>
        Checkpoint.Save(path, Config, Topology, step, seed, Tokenizer.Vocabulary, Codec.Scales, Codec.Shifts, Unet, Text, optimizer, extra, trainOptions, loopCorrection, ema);

    /// <summary>Releases the weights.</summary>
    public void Dispose()
    {
        Unet.Dispose();
        Text.Dispose();
    }
}
