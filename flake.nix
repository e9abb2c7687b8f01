{
  description = "cifarnet: hand-written CNNs in NumPy/CuPy with a Hydra runner";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = import nixpkgs { inherit system; };
      python = pkgs.python311.withPackages (ps: with ps; [ numpy hydra-core omegaconf pytest pip ]);
    in {
      devShells.${system}.default = pkgs.mkShell {
        packages = [ python ];
        shellHook = ''
          echo "cifarnet dev shell: pip install -e . --no-deps, then python -m pytest"
        '';
      };
    };
}
