{
  description = "cifarnet: convolutional networks written by hand in NumPy/CuPy, with a Hydra runner";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = import nixpkgs {
        inherit system;
        config.allowUnfree = true;          # CUDA
      };
      cpuPackages = ps: with ps; [ numpy hydra-core omegaconf tqdm pytest ruff pillow matplotlib onnx pip ];
      shellHook = ''
        # cifarnet itself from the checkout, on top of the Nix-provided dependencies.
        export PYTHONPATH="$PWD:$PYTHONPATH"
        echo "cifarnet dev shell: python -m cifarnet --help, python -m pytest"
      '';
    in {
      devShells.${system} = {
        # CPU: Python, NumPy and the project's tools.
        default = pkgs.mkShell {
          packages = [ (pkgs.python311.withPackages cpuPackages) ];
          inherit shellHook;
        };
        # GPU: the same plus CuPy built against nixpkgs' CUDA (python -m cifarnet backend=cupy).
        cuda = pkgs.mkShell {
          packages = [ (pkgs.python311.withPackages (ps: cpuPackages ps ++ [ ps.cupy ])) ];
          shellHook = shellHook + ''
            export LD_LIBRARY_PATH=/run/opengl-driver/lib:$LD_LIBRARY_PATH
          '';
        };
      };
    };
}
