"""`edgecat keygen` and `edgecat sign`: the owner's side of signed bundles (see edgecat.signing)."""

from __future__ import annotations

import click

from edgecat.cli.common import command, console


def trusted_key_option() -> object:
    """``--trusted-key FILE`` (repeatable) for the commands that run a bundle."""
    return click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False, path_type=str),
                        help="Run only bundles signed by this public key (repeatable; also $EDGECAT_TRUSTED_KEYS, "
                             "':'-separated). Unsigned, wrongly signed or changed bundles are refused.")


@command("keygen", examples=["edgecat keygen --out keys/",
                             "scp keys/edgecat.pub device:/etc/edgecat/trusted.pub"])
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder for edgecat.key (private, mode 0600: keep it off the devices) and edgecat.pub.")
def keygen_cmd(out: str) -> None:
    """Make an Ed25519 key pair for signing bundles."""
    from edgecat.signing import keygen

    priv, pub = keygen(out)
    console.print(f"private key: {priv} (keep it secret)\npublic key:  {pub} (give it to devices as --trusted-key)")


@command("sign", examples=["edgecat sign runs/cats --key keys/edgecat.key"])
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--key", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Private key file from `edgecat keygen`.")
def sign_cmd(bundle: str, key: str) -> None:
    """Sign BUNDLE: its manifest, which lists the sha256 of every artifact."""
    from edgecat.signing import sign_bundle

    dest = sign_bundle(bundle, key)
    console.print(f"signed: {dest}")


COMMANDS: list[click.Command] = [keygen_cmd, sign_cmd]
