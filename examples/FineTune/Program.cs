// Fine-tune the temporal layers of a text-to-video model with the parallel (Mobius) topology on the CPU,
// print what the memory went to, and sample a clip. See docs/embed.md.
using Mobius.Data;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;

// A backend: the CPU here; `new Mobius.Cuda.CudaBackend()` on a GPU (package Mobius.Cuda).
using var backend = new CpuBackend();

// A model: the tiny config in the parallel topology. A stage-1 checkpoint would come in with
// TextToVideo.Load(backend, Checkpoint.Load(path), Topology.Parallel, seed).
var config = ModelConfig.Get("tiny");
using var model = TextToVideo.Create(backend, config, Topology.Parallel, seed: 1);

// Data and a trainer: stage 2 freezes the text-to-image UNet and the text encoder.
var clips = new EmojiClips(new EmojiClipsOptions { Seed = 1, Frames = config.Frames, Height = config.Height, Width = config.Width });
using var trainer = new Trainer(model, clips, Stage.TextToVideo, new TrainOptions { Seed = 1, LearningRate = 1e-3f });
Console.WriteLine($"{config.Name}, {model.Topology}: {trainer.TrainableParameters:N0} trainable of {model.Unet.ParameterCount() + model.Text.ParameterCount():N0} parameters");
for (int i = 0; i < 3; i++)
{
    var step = trainer.TrainStep();
    Console.WriteLine($"step {step.Step}: loss {step.Loss:0.0000}, {step.Milliseconds:0} ms, {step.SavedActivationBytes / 1048576.0:0.0} MiB kept for backward");
}

// Memory by category at the peak of the last step, from the engine's allocator.
var memory = backend.Memory.Snapshot();
foreach (var (category, bytes) in memory.AtPeak)
{
    Console.WriteLine($"  {category,-17} {bytes / 1048576.0,8:0.0} MiB");
}

// Sample one clip and write it as an animated GIF.
float[] pixels = model.Generate(["a red heart moving left"], steps: 5, guidance: 4f, seed: 1);
string gif = Path.Combine(AppContext.BaseDirectory, "heart.gif");
Gif.Write(gif, pixels, config.Frames, config.Height, config.Width, new GifWriteOptions { Upscale = 4 });
Console.WriteLine($"wrote {gif}");
