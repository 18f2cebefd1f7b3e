//! The released migrations, pinned by SHA-256. A database that ran a migration keeps its
//! checksum, and sqlx refuses to start on one whose file changed since; so a released migration
//! is never edited, only followed by a new one. These tests make an edit fail in CI instead of
//! at a customer's upgrade.

use sha2::{Digest, Sha256};

/// Every migration file of both backends with its SHA-256. A new migration is added here when
/// it is released; a changed line here is a changed released migration.
const PINNED: &[(&str, &str)] = &[
    (
        "postgres/0001_cards.sql",
        "3544ed0d96a75bf1fd0531df1cb9133552ad00e06c86cc3b48ca4eb4624e9789",
    ),
    (
        "postgres/0002_monitoring.sql",
        "5c32a37980cadd9f5e1f9a319f0d5a6f30c0b65d1637d158ff1914b282898e4d",
    ),
    (
        "postgres/0003_journal_settles_forward.sql",
        "aa9db1c3e511939d90e23dd8d01407d0ac96ee6aba4a775f2fec4bd32d5160ae",
    ),
    (
        "postgres/0004_inventory_and_fair_batches.sql",
        "1b3fc913df341c726f8d9dee7e0299ea7bd9709e130c5d47190575e02fa7995b",
    ),
    (
        "postgres/0005_pools_per_customer.sql",
        "77e6730a454e52b0a0f5e350353f1cfcb53803679c97c7115fa1e5d181cbeb50",
    ),
    (
        "postgres/0006_batch_counts_by_index.sql",
        "770fdb1816bbf471fb9bfee9292ba544719f355ea7802c22052af420e215dc9c",
    ),
    (
        "sqlite/0001_cards.sql",
        "41bf4cf9b2301d87dec8b059b5d8e90327475512ebdaf44640abc8cda113fda1",
    ),
    (
        "sqlite/0002_monitoring.sql",
        "5c32a37980cadd9f5e1f9a319f0d5a6f30c0b65d1637d158ff1914b282898e4d",
    ),
    (
        "sqlite/0003_journal_settles_forward.sql",
        "aa9db1c3e511939d90e23dd8d01407d0ac96ee6aba4a775f2fec4bd32d5160ae",
    ),
    (
        "sqlite/0004_inventory_and_fair_batches.sql",
        "1b3fc913df341c726f8d9dee7e0299ea7bd9709e130c5d47190575e02fa7995b",
    ),
    (
        "sqlite/0005_pools_per_customer.sql",
        "209a379b8aea99a30e5d9c57e46dbd3e7e8931de753ae5459ceceae0c60419af",
    ),
    (
        "sqlite/0006_batch_counts_by_index.sql",
        "770fdb1816bbf471fb9bfee9292ba544719f355ea7802c22052af420e215dc9c",
    ),
    (
        "postgres/0007_carrier_accounts.sql",
        "4961d694305de85d2c9bba2935ad98a4d20682ff71b00fa7617f5c0768881845",
    ),
    (
        "sqlite/0007_carrier_accounts.sql",
        "4961d694305de85d2c9bba2935ad98a4d20682ff71b00fa7617f5c0768881845",
    ),
    (
        "postgres/0008_shared_account_limits.sql",
        "17efff5e8c8bbe4d6a8863fc0b013c60f7f9b0f443b479ca34827a2fdcc7d53a",
    ),
    (
        "sqlite/0008_shared_account_limits.sql",
        "17efff5e8c8bbe4d6a8863fc0b013c60f7f9b0f443b479ca34827a2fdcc7d53a",
    ),
    (
        "postgres/0009_sim_card_numbers.sql",
        "a78e8c7464468fa75534a5d9b735bc6855b32b7cfe2da02b3e27f40be47bc016",
    ),
    (
        "sqlite/0009_sim_card_numbers.sql",
        "a78e8c7464468fa75534a5d9b735bc6855b32b7cfe2da02b3e27f40be47bc016",
    ),
    (
        "postgres/0010_carrier_unknown.sql",
        "ae600347e5f2a240c9c4d570ce69712563df859e128be78830dbd097d85312fa",
    ),
    (
        "sqlite/0010_carrier_unknown.sql",
        "ae600347e5f2a240c9c4d570ce69712563df859e128be78830dbd097d85312fa",
    ),
    (
        "postgres/0011_carrier_orders.sql",
        "fcafa4e66f17fd976aee75cb5b39a8bea06a618cca99504beee964ed5e1f5276",
    ),
    (
        "postgres/0012_sim_binding_and_orders.sql",
        "6bd1c2ff5a9a644ebccdeec09b54d1b8f7eb06cddf29d09ea004356039cec3fc",
    ),
    (
        "postgres/0013_batch_calls.sql",
        "385cb963946f1d3cfca40db72ba2edaf94cf00fbc3b6033b287d4bc26ad48a27",
    ),
    (
        "sqlite/0011_carrier_orders.sql",
        "fcafa4e66f17fd976aee75cb5b39a8bea06a618cca99504beee964ed5e1f5276",
    ),
    (
        "sqlite/0012_sim_binding_and_orders.sql",
        "6bd1c2ff5a9a644ebccdeec09b54d1b8f7eb06cddf29d09ea004356039cec3fc",
    ),
    (
        "sqlite/0013_batch_calls.sql",
        "385cb963946f1d3cfca40db72ba2edaf94cf00fbc3b6033b287d4bc26ad48a27",
    ),
];

fn migrations_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations")
}

/// The `.sql` files of one backend's folder, by name.
fn files_of(backend: &str) -> Vec<String> {
    let dir = migrations_dir().join(backend);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    names
}

#[test]
fn released_migrations_are_never_edited() {
    for (path, pinned) in PINNED {
        let bytes = std::fs::read(migrations_dir().join(path))
            .unwrap_or_else(|e| panic!("released migration {path} is gone: {e}"));
        let actual = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(
            &actual, pinned,
            "released migration {path} changed: migrations are append-only, add a new one instead"
        );
    }
    for backend in ["sqlite", "postgres"] {
        for name in files_of(backend) {
            let path = format!("{backend}/{name}");
            assert!(
                PINNED.iter().any(|(p, _)| *p == path),
                "{path} is not pinned: add its SHA-256 to PINNED when it is released"
            );
        }
    }
}

#[test]
fn sqlite_and_postgres_carry_the_same_migrations() {
    assert_eq!(
        files_of("sqlite"),
        files_of("postgres"),
        "every migration exists for both backends under the same name"
    );
}
