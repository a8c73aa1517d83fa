# Nix packaging for Kiln (users on Nix). Not built in CI: these machines reach no Nix binary
# cache or nixpkgs; only its syntax is checked (`nix-instantiate --parse flake.nix`).
# NixOS node images come later; today's images are built from Debian packages (images/).
{
  description = "Kiln: a VMM and test orchestrator for multi-node Linux systems";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
    in {
      packages.${system}.default = pkgs.rustPlatform.buildRustPackage {
        pname = "kiln";
        version = "0.1.0";
        src = ./.;
        cargoLock.lockFile = ./Cargo.lock;
        # The tests need /dev/kvm and QEMU, which the Nix build sandbox does not have.
        doCheck = false;
      };

      devShells.${system}.default = pkgs.mkShell {
        packages = with pkgs; [ cargo rustc clippy rustfmt qemu mmdebstrap e2fsprogs ];
      };
    };
}
