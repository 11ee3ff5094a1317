namespace Mobius.Engine;

/// <summary>What a block of backend memory is for; every report breaks memory down by these.</summary>
public enum MemoryCategory
{
    /// <summary>Model parameters.</summary>
    Weights,

    /// <summary>Parameter gradients.</summary>
    Gradients,

    /// <summary>Optimiser moments.</summary>
    OptimizerState,

    /// <summary>Activations held by the autograd tape for backward.</summary>
    SavedActivations,

    /// <summary>Everything else produced by ops: activations not (or no longer) saved, intermediate gradients, inputs.</summary>
    Temporaries,

    /// <summary>Scratch space an op needs only while it runs (im2col buffers, cuDNN workspace).</summary>
    Workspace,
}
