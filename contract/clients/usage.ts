// Compiled with `tsc --strict` against the types openapi-typescript generates from
// openapi/openapi.json (contract/clients.sh): a client creates an incident and handles each
// outcome by its type. It fails to compile if an operation stops typing its problems.
import createClient from "openapi-fetch";
import type { components, paths } from "./api";

type ProblemDetails = components["schemas"]["ProblemDetails"];
type ValidationProblem = components["schemas"]["ValidationProblem"];

const client = createClient<paths>({ baseUrl: "http://127.0.0.1:8080" });

/** `true` when `T` is `never`: an operation that typed no error would give `never`. */
type IsNever<T> = [T] extends [never] ? true : false;

/** What went wrong, for a person: the fields at fault when the problem lists them. */
export function describe(problem: ProblemDetails | ValidationProblem): string {
  const fields = (problem.errors ?? []).map((error) => `${error.field}: ${error.message}`);
  return fields.length > 0
    ? `${problem.status} ${problem.title}: ${fields.join("; ")}`
    : `${problem.status} ${problem.title}: ${problem.detail}`;
}

export async function openIncident(token: string, title: string): Promise<string> {
  const { data, error, response } = await client.POST("/api/v1/incidents", {
    headers: { Authorization: `Bearer ${token}` },
    body: { title, impact: "high", urgency: "medium" },
  });
  if (data !== undefined) {
    return data.number;
  }
  // Every error this operation documents is a problem document: assignable without a cast,
  // and not `never`.
  const typed: IsNever<typeof error> extends false ? true : never = true;
  const problem: ProblemDetails | ValidationProblem = error;
  if (!typed) {
    return "unreachable";
  }
  if (response.status === 422) {
    // A 422 always names at least one field.
    const invalid = problem as ValidationProblem;
    return `invalid: ${invalid.errors.map((e) => e.field).join(", ")}`;
  }
  return describe(problem);
}

export async function updateIncident(token: string, id: string, etag: string): Promise<string> {
  const { data, error } = await client.PATCH("/api/v1/incidents/{id}", {
    params: { path: { id }, header: { "If-Match": etag } },
    headers: { Authorization: `Bearer ${token}` },
    body: { urgency: "low" },
  });
  return data !== undefined ? data.number : describe(error);
}

// A validation problem without `errors` is not one.
// @ts-expect-error errors is required
export const notAValidationProblem: ValidationProblem = {
  type: "https://itsm.example/problems/validation",
  title: "Invalid request",
  status: 422,
  detail: "title: is required",
};
