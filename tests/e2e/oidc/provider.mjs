// A real OpenID provider for the single sign-on tests: the npm package oidc-provider, with its
// development login form (any password), consent skipped, a `groups` claim, and one client.
//
// Usage: node provider.mjs NPM_DIR PORT REDIRECT_URI CLIENT_SECRET
// Prints "ready <issuer>" once listening. Test-only control: POST /__test/tamper?claim=MODE makes
// the next ID tokens carry a wrong issuer (iss), an expiry long past (exp) or another nonce
// (nonce), re-signed with the provider's own key, so that only that claim is wrong; MODE
// "none" stops it. People: alice (groups shop-devs, ops), bob (no groups).
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [npmDir, port, redirectUri, clientSecret] = process.argv.slice(2);
const require = createRequire(join(npmDir, 'node_modules', 'noop.js'));
const load = async (name) => import(pathToFileURL(require.resolve(name)).href);
const { default: Provider } = await load('oidc-provider');
const jose = await load('jose');

const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await jose.exportJWK(privateKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };

const people = {
  alice: { email: 'alice@example.com', name: 'Alice Example', groups: ['shop-devs', 'ops'] },
  bob: { email: 'bob@example.com', name: 'Bob Example', groups: [] },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'conveyor',
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['a test cookie key that signs nothing of value'] },
  pkce: { required: () => true },
  conformIdTokenClaims: false,
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const person = people[id] ?? { email: `${id}@example.com`, name: id, groups: [] };
    return {
      accountId: id,
      async claims() {
        return {
          sub: `subject-${id}`,
          preferred_username: id,
          name: person.name,
          email: person.email,
          email_verified: false,
          groups: person.groups,
        };
      },
    };
  },
  // Consent is not what is tested: every scope and claim is granted at once.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email groups');
    grant.addOIDCClaims(['name', 'preferred_username', 'email', 'email_verified', 'groups']);
    await grant.save();
    return grant;
  },
});

// What went wrong inside the provider goes to its standard error (the test's provider.log).
provider.on('server_error', (ctx, err) => process.stderr.write(`server_error: ${err.stack}\n`));

let tamper = 'none';
provider.use(async (ctx, next) => {
  if (ctx.path === '/__test/tamper' && ctx.method === 'POST') {
    tamper = ctx.query.claim ?? 'none';
    ctx.body = { tamper };
    return;
  }
  await next();
  if (ctx.path === '/token' && tamper !== 'none' && ctx.body?.id_token) {
    const claims = jose.decodeJwt(ctx.body.id_token);
    if (tamper === 'iss') claims.iss = 'https://impostor.example.com';
    if (tamper === 'exp') { claims.iat -= 7200; claims.exp = claims.iat + 600; }
    if (tamper === 'nonce') claims.nonce = 'a-nonce-conveyor-never-sent';
    ctx.body = {
      ...ctx.body,
      id_token: await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: signingKey.kid })
        .sign(privateKey),
    };
  }
});

provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
