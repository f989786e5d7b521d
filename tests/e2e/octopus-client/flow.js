// A build server's run against Conveyor, through the official Octopus API client
// (@octopusdeploy/api-client) exactly as the GitHub Actions use it: push packages and build
// information, create a release, deploy it, wait for its task, cancel one on timeout.
//
// Input (environment): OCTOPUS_URL, OCTOPUS_API_KEY (may do everything), OCTOPUS_BUILD_KEY (a
// build server's key: Dev only), OCTOPUS_PACKAGES (JSON list of archive paths). NODE_PATH must
// reach the client's node_modules. Output: one JSON object on stdout, a result per step:
// {"ok": true, "value": …} or {"ok": false, "error": "…"}.
"use strict";

const {
  Client,
  BuildInformationRepository,
  DeploymentRepository,
  OverwriteMode,
  PackageRepository,
  ReleaseRepository,
  ServerTaskWaiter,
  SpaceServerTaskRepository,
} = require("@octopusdeploy/api-client");

const SPACE = "Default";
const SHA = "0123456789abcdef0123456789abcdef01234567";
const results = {};

async function step(name, work) {
  const started = Date.now();
  try {
    results[name] = { ok: true, value: await work() };
  } catch (error) {
    results[name] = { ok: false, error: String(error && error.message ? error.message : error) };
  }
  results[name].ms = Date.now() - started;
  return results[name];
}

function connect(apiKey) {
  return Client.create({
    instanceURL: process.env.OCTOPUS_URL,
    apiKey,
    userAgentApp: "conveyor-tests (release;create+deploy)",
  });
}

async function main() {
  const client = await connect(process.env.OCTOPUS_API_KEY);
  const build = await connect(process.env.OCTOPUS_BUILD_KEY);
  const packages = JSON.parse(process.env.OCTOPUS_PACKAGES);
  const feed = new PackageRepository(client, SPACE);

  await step("push", () => feed.push(packages, OverwriteMode.FailIfExists));
  await step("push_again", () => feed.push(packages, OverwriteMode.FailIfExists));
  await step("push_ignore", () => feed.push(packages, OverwriteMode.IgnoreIfExists));

  const information = {
    spaceName: SPACE,
    BuildEnvironment: "GitHub Actions",
    BuildNumber: "42",
    BuildUrl: "https://github.example.com/shop/actions/runs/42",
    Branch: "main",
    VcsType: "Git",
    VcsRoot: "https://github.example.com/shop",
    VcsCommitNumber: SHA,
    Packages: [{ Id: "Hello", Version: "1.0.0" }],
    Commits: [{ Id: SHA, Comment: "Say hello" }],
  };
  const infos = new BuildInformationRepository(client, SPACE);
  await step("build_information", () => infos.push(information, OverwriteMode.FailIfExists));
  await step("build_information_again", () => infos.push(information));
  await step("listed", async () => {
    const page = await feed.list({ nuGetPackageId: "Hello" });
    const one = await feed.get(page.Items[0].Id);
    return {
      total: page.TotalResults,
      versions: page.Items.map((p) => p.Version),
      commit: one.PackageVersionBuildInformation && one.PackageVersionBuildInformation.VcsCommitNumber,
    };
  });

  const releases = new ReleaseRepository(client, SPACE);
  const created = await step("release", () =>
    releases.create({ spaceName: SPACE, ProjectName: "Hello", PackageVersion: "1.0.0" }),
  );
  await step("release_read", async () => {
    const release = await releases.get(created.value.ReleaseId);
    return { version: release.Version, packages: release.SelectedPackages };
  });

  const deployments = new DeploymentRepository(client, SPACE);
  const waiter = new ServerTaskWaiter(client, SPACE);
  const deployed = await step("deploy", () =>
    deployments.create({
      spaceName: SPACE,
      ProjectName: "Hello",
      ReleaseVersion: created.value.ReleaseVersion,
      EnvironmentNames: ["Dev"],
    }),
  );
  await step("deployments", async () => {
    const ids = deployed.value.DeploymentServerTasks.map((t) => t.DeploymentId);
    const page = await deployments.list({ ids, take: ids.length });
    return page.Items.map((d) => ({ id: d.Id, task: d.TaskId, environment: d.EnvironmentId }));
  });
  const seen = [];
  await step("wait", async () => {
    const ids = deployed.value.DeploymentServerTasks.map((t) => t.ServerTaskId);
    const tasks = await waiter.waitForServerTasksToComplete(ids, 100, 30000, (t) =>
      seen.push(t.State),
    );
    return tasks.map((t) => ({ id: t.Id, state: t.State, completed: t.IsCompleted }));
  });
  results.wait_states = { ok: true, value: [...new Set(seen)] };
  await step("details", async () => {
    const repository = new SpaceServerTaskRepository(client, SPACE);
    const id = deployed.value.DeploymentServerTasks[0].ServerTaskId;
    const details = await repository.getDetails(id);
    const raw = await repository.getRaw(id);
    return {
      state: details.Task.State,
      steps: details.ActivityLogs[0].Children.map((c) => [c.Name, c.Status]),
      raw,
    };
  });
  await step("unknown_task", () => waiter.waitForServerTasksToComplete(["ServerTasks-99999"], 100, 5000));

  // A build server may deploy where its role lets it, and nowhere else.
  await step("build_to_test", () =>
    new DeploymentRepository(build, SPACE).create({
      spaceName: SPACE,
      ProjectName: "Hello",
      ReleaseVersion: created.value.ReleaseVersion,
      EnvironmentNames: ["Test"],
    }),
  );

  // A deployment that outlives the wait is canceled (await-task-action's cancel_on_timeout).
  const slow = await step("slow_release", () =>
    releases.create({ spaceName: SPACE, ProjectName: "Slow", ReleaseVersion: "1.0.0" }),
  );
  const slowDeployed = await step("slow_deploy", () =>
    deployments.create({
      spaceName: SPACE,
      ProjectName: "Slow",
      ReleaseVersion: slow.value.ReleaseVersion,
      EnvironmentNames: ["Dev"],
    }),
  );
  const slowIds = (slowDeployed.value ? slowDeployed.value.DeploymentServerTasks : []).map(
    (t) => t.ServerTaskId,
  );
  await step("timeout_cancels", () => waiter.waitForServerTasksToComplete(slowIds, 100, 1000, undefined, true));
  await step("after_cancel", async () => {
    const tasks = await waiter.waitForServerTasksToComplete(slowIds, 100, 20000);
    return tasks.map((t) => ({ state: t.State, completed: t.IsCompleted }));
  });
}

main()
  .catch((error) => {
    results.fatal = { ok: false, error: String(error && error.stack ? error.stack : error) };
  })
  .finally(() => {
    process.stdout.write(JSON.stringify(results) + "\n");
  });
