using System.Globalization;
using System.Text.Json;
using Mobius.Engine;
using Mobius.Engine.IO;
using Mobius.Engine.NN;

namespace Mobius.Model.Training;

/// <summary>
/// A training checkpoint in safetensors (PyTorch's safetensors reads it): the UNet under "unet.",
/// the text encoder under "text.", AdamW moments under "optim.", and in the metadata the config,
/// topology, stage, step, seed, tokenizer vocabulary and codec scales; a trainer's checkpoint also holds its
/// options and, with the loop correction, that correction's state (running differences under "loop_bias.").
/// Written atomically.
/// </summary>
public sealed class Checkpoint
{
    /// <summary>Format tag in the metadata.</summary>
    public const string Format = "mobius-checkpoint-1";

    /// <summary>The model configuration.</summary>
    public required ModelConfig Config { get; init; }

    /// <summary>Topology the UNet was saved in (a text-to-image checkpoint is <see cref="Model.Topology.Spatial"/>).</summary>
    public required Topology Topology { get; init; }

    /// <summary>Training step the checkpoint was taken after.</summary>
    public int Step { get; init; }

    /// <summary>Seed of the run (data order, noise).</summary>
    public int Seed { get; init; }

    /// <summary>Tokenizer vocabulary.</summary>
    public required IReadOnlyList<string> Vocabulary { get; init; }

    /// <summary>Latent codec per-channel scales.</summary>
    public required IReadOnlyList<float> CodecScales { get; init; }

    /// <summary>Latent codec per-channel shifts.</summary>
    public required IReadOnlyList<float> CodecShifts { get; init; }

    /// <summary>UNet parameters by name.</summary>
    public required Dictionary<string, float[]> Unet { get; init; }

    /// <summary>Text encoder parameters by name.</summary>
    public required Dictionary<string, float[]> Text { get; init; }

    /// <summary>Optimiser moments by "name.exp_avg" / "name.exp_avg_sq" (empty without an optimiser).</summary>
    public Dictionary<string, float[]> Optimizer { get; init; } = new();

    /// <summary>Optimiser steps taken.</summary>
    public int OptimizerSteps { get; init; }

    /// <summary>Free-form metadata (for example the command that made the checkpoint).</summary>
    public Dictionary<string, string> Extra { get; init; } = new();

    /// <summary>
    /// The options of the run that wrote the checkpoint (null when no trainer wrote it, or an older one):
    /// what a resumed run takes unless told otherwise.
    /// </summary>
    public TrainOptions? TrainOptions { get; init; }

    /// <summary>
    /// The loop bridge's gradient correction as it stood (<see cref="TrainOptions.LoopCorrectionEvery"/>; null
    /// without one): a resumed run continues with the coefficients or running difference already measured.
    /// </summary>
    public LoopCorrectionState? LoopCorrection { get; init; }

    /// <summary>
    /// The exponential moving average of the trainable weights by parameter name ("unet.…", "text.…"), when the run
    /// kept one (<see cref="TrainOptions.EmaDecay"/>; tensors under "ema."); null otherwise. <see cref="WithEma"/>
    /// gives the checkpoint with these in place of the trained weights.
    /// </summary>
    public IReadOnlyDictionary<string, float[]>? Ema { get; init; }

    /// <summary>This checkpoint with its <see cref="Ema"/> weights in place of the trained ones (itself when it has none).</summary>
    public Checkpoint WithEma()
    {
        if (Ema is not { Count: > 0 } ema)
        {
            return this;
        }

        Dictionary<string, float[]> Swap(IReadOnlyDictionary<string, float[]> weights, string prefix) =>
            weights.ToDictionary(kv => kv.Key, kv => ema.TryGetValue(prefix + kv.Key, out var average) ? average : kv.Value);
        return new Checkpoint
        {
            Config = Config, Topology = Topology, Step = Step, Seed = Seed, Vocabulary = Vocabulary, CodecScales = CodecScales, CodecShifts = CodecShifts,
            Unet = Swap(Unet, "unet."), Text = Swap(Text, "text."), Optimizer = Optimizer, OptimizerSteps = OptimizerSteps, Extra = Extra,
            TrainOptions = TrainOptions, LoopCorrection = LoopCorrection, Ema = Ema,
        };
    }

    private static readonly string[] Reserved =
        ["format", "config", "topology", "step", "seed", "vocabulary", "codec_scales", "codec_shifts", "optimizer_steps", "train_options", "loop_correction"];

    /// <summary>Writes the checkpoint; parameter shapes are taken from the modules.</summary>
    public static void Save(string path, ModelConfig config, Topology topology, int step, int seed, IReadOnlyList<string> vocabulary,
        IReadOnlyList<float> codecScales, IReadOnlyList<float> codecShifts, Module unet, Module text, Mobius.Engine.Optim.AdamW? optimizer, IReadOnlyDictionary<string, string>? extra = null,
        TrainOptions? trainOptions = null, LoopCorrectionState? loopCorrection = null, IReadOnlyDictionary<string, float[]>? ema = null)
    {
        if (extra?.Keys.FirstOrDefault(k => Reserved.Contains(k)) is { } clash)
        {
            throw new ArgumentException($"metadata key '{clash}' is the checkpoint's own.", nameof(extra));
        }

        var tensors = new Dictionary<string, SafeTensors.Entry>();
        foreach (var (name, p) in unet.NamedParameters())
        {
            tensors["unet." + name] = new SafeTensors.Entry(p.Shape.ToArray(), p.ToArray());
        }

        foreach (var (name, p) in text.NamedParameters())
        {
            tensors["text." + name] = new SafeTensors.Entry(p.Shape.ToArray(), p.ToArray());
        }

        if (optimizer is not null)
        {
            foreach (var (name, values) in optimizer.StateDict())
            {
                tensors["optim." + name] = new SafeTensors.Entry([values.Length], values);
            }
        }

        if (loopCorrection is not null)
        {
            foreach (var (name, values) in loopCorrection.Bias)
            {
                tensors["loop_bias." + name] = new SafeTensors.Entry([values.Length], values);
            }
        }

        if (ema is not null)
        {
            foreach (var (name, values) in ema)
            {
                tensors["ema." + name] = new SafeTensors.Entry([values.Length], values);
            }
        }

        var meta = new Dictionary<string, string>(extra ?? new Dictionary<string, string>())
        {
            ["format"] = Format,
            ["config"] = config.ToJson(),
            ["topology"] = topology.ToString(),
            ["step"] = step.ToString(CultureInfo.InvariantCulture),
            ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
            ["vocabulary"] = JsonSerializer.Serialize(vocabulary),
            ["codec_scales"] = JsonSerializer.Serialize(codecScales),
            ["codec_shifts"] = JsonSerializer.Serialize(codecShifts),
            ["optimizer_steps"] = (optimizer?.StepCount ?? 0).ToString(CultureInfo.InvariantCulture),
        };
        if (trainOptions is not null)
        {
            meta["train_options"] = trainOptions.ToJson();
        }

        if (loopCorrection is not null)
        {
            meta["loop_correction"] = loopCorrection.MetadataJson();
        }

        SafeTensors.Write(path, tensors, meta);
    }

    /// <summary>Reads a checkpoint; a missing file, another format or a damaged file raises an exception naming the file.</summary>
    public static Checkpoint Load(string path)
    {
        var (tensors, meta) = SafeTensors.Read(path);
        string Meta(string key) => meta.TryGetValue(key, out var v) ? v : throw new InvalidDataException($"{path} is not a Mobius checkpoint: metadata '{key}' is missing.");
        if (Meta("format") != Format)
        {
            throw new InvalidDataException($"{path} has format '{meta["format"]}', expected '{Format}'.");
        }

        try
        {
            var extra = meta.Where(kv => !Reserved.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
            return new Checkpoint
            {
                Config = ModelConfig.FromJson(Meta("config")),
                Topology = Enum.Parse<Topology>(Meta("topology")),
                Step = int.Parse(Meta("step"), CultureInfo.InvariantCulture),
                Seed = int.Parse(Meta("seed"), CultureInfo.InvariantCulture),
                Vocabulary = JsonSerializer.Deserialize<List<string>>(Meta("vocabulary")) ?? [],
                CodecScales = JsonSerializer.Deserialize<List<float>>(Meta("codec_scales")) ?? [],
                CodecShifts = JsonSerializer.Deserialize<List<float>>(Meta("codec_shifts")) ?? [],
                OptimizerSteps = int.Parse(Meta("optimizer_steps"), CultureInfo.InvariantCulture),
                Unet = Section(tensors, "unet."),
                Text = Section(tensors, "text."),
                Optimizer = Section(tensors, "optim."),
                Extra = extra,
                TrainOptions = meta.TryGetValue("train_options", out var options) ? TrainOptions.FromJson(options) : null,
                LoopCorrection = meta.TryGetValue("loop_correction", out var loop) ? LoopCorrectionState.FromMetadata(loop, Section(tensors, "loop_bias.")) : null,
                Ema = Section(tensors, "ema.") is { Count: > 0 } ema ? ema : null,
            };
        }
        catch (Exception e) when (e is JsonException or FormatException or ArgumentException or OverflowException)
        {
            throw new InvalidDataException($"{path} has damaged metadata: {e.Message}", e);
        }
    }

    private static Dictionary<string, float[]> Section(Dictionary<string, SafeTensors.Entry> all, string prefix) =>
        all.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value.Data);
}
