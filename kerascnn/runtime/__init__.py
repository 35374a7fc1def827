"""The machine a run uses: Keras' backend set up before it starts
(`backend`), and the accelerators, mixed precision and distribution
strategies (`distribution`). Imports only `kerascnn.config`."""
