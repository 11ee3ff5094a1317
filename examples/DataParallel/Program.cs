// Train the temporal layers data parallel: two ranks, each a replica of the model on a CPU backend of its own,
// their gradients averaged before every step, so both ranks hold the same weights throughout. See docs/embed.md.
using Mobius.Data;
using Mobius.Engine.Cpu;
using Mobius.Model;
using Mobius.Model.Training;

// One backend per rank; the cores shared between them. On GPUs: one `new Mobius.Cuda.CudaBackend(device)` per rank
// and `new Mobius.Cuda.NcclCollectives(backends)` as the trainer's collectives.
int threads = Math.Max(1, Environment.ProcessorCount / 2);
using var backend0 = new CpuBackend(threads);
using var backend1 = new CpuBackend(threads);
var config = ModelConfig.Get("tiny");
using var rank0 = TextToVideo.Create(backend0, config, Topology.Parallel, seed: 1);
using var rank1 = TextToVideo.Create(backend1, config, Topology.Parallel, seed: 1); // the trainer copies rank 0's weights in

var clips = new EmojiClips(new EmojiClipsOptions { Seed = 1, Frames = config.Frames, Height = config.Height, Width = config.Width });
var options = new TrainOptions { Seed = 1, LearningRate = 1e-3f, Batch = 1, Ranks = 2 }; // a step: 2 ranks x 1 clip
using var trainer = new Trainer(rank0, [rank1], clips, Stage.TextToVideo, options);
for (int i = 0; i < 3; i++)
{
    var step = trainer.TrainStep();
    Console.WriteLine($"step {step.Step}: loss {step.Loss:0.0000} (the mean over both ranks' clips), {step.Milliseconds:0} ms");
}

// Every rank stepped its own optimizer on the same averaged gradient: the same weights, to the bit.
var weights0 = rank0.Unet.StateDict();
bool same = rank1.Unet.StateDict().All(kv => kv.Value.AsSpan().SequenceEqual(weights0[kv.Key]));
Console.WriteLine($"ranks hold the same weights: {same}");
return same ? 0 : 1;
