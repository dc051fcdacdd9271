"""`python -m bnsweep.bench`: how close PGD-k adversarial training comes to its ideal cost, on this device.

Cost model (as in AutoAttack, github.com/fra31/auto-attack, which takes input-only
gradients): a PGD-k training step needs k input-gradient passes (forward, then
backward to the input only) plus one training step; anything above that is overhead. A careless loop
also computes every parameter gradient in each attack step, and BN-only training that freezes by
leaving parameters out of the optimiser still computes every frozen convolution's weight gradient.

Parts (``--part``; each prints one section):

  efficiency  clean train step, input-gradient pass and PGD-k step per trainable set and k
  peers       bnsweep vs a fast_adversarial-style loop and torchattacks.PGD: same model, data, run
  gpu         images/s of PGD training on CUDA: fp32 vs bf16, eager vs torch.compile
  eval        robust evaluation attacking only still-correct examples vs attacking every example
  packing     aggregate images/s of 1, 2, 4, 8 trials sharing one GPU through Ray Tune (sweep.py)
  overhead    share of a short-trial sweep's wall time spent computing, through Ray Tune (sweep.py)
  loading     results.load and results.history on a generated 1,000-trial x 50-epoch experiment (loading.py)
  cpu         fp32/bf16 x eager/compiled on one CPU thread, the laptop study's steps, compile time apart (cpu.py)

Every time is the median of ``--reps`` repetitions after ``--warmup`` calls, with the variants of a
section interleaved (A B C A B C ...) so that drift on a shared machine hits all of them alike. Data
is the synthetic, CIFAR-shaped ``planted`` set: timings do not depend on image content.
"""

