/** Effect as the engine bundles it: pipeline files that import "effect" get this one instance. */
export * from "effect"
