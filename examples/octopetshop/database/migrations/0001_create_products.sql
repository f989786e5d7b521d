-- Product catalogue, seeded with a few pets' essentials.
CREATE TABLE products (
    id          INTEGER PRIMARY KEY,
    sku         TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0)
);

INSERT INTO products (sku, name, description, price_cents) VALUES
    ('DOG-BED-01', 'Cosy Dog Bed', 'Washable bed for medium dogs', 4999),
    ('CAT-TREE-01', 'Cat Climbing Tree', 'Three levels of scratching fun', 7450),
    ('FISH-TANK-20', 'Aquarium 20 L', 'Starter tank with filter and light', 5900),
    ('BIRD-SEED-1K', 'Bird Seed Mix 1 kg', 'For canaries and finches', 899),
    ('OCTO-PLUSH', 'Octopus Plush Toy', 'Eight squeaky legs', 1299);
