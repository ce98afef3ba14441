/*
 * The repo's storage, behind one small interface so that the local disk (the embedded default)
 * and etcd (several replicas serving the same data) are interchangeable. A codebase is one small
 * record (its versions' manifests: path -> content hash) plus content-addressed blobs, so a change
 * to one file writes one blob and one record, whatever the codebase's size.
 */
export interface CodebaseRecord {
  /** Normalised name, e.g. /flb/mesh */
  name: string;
  /** The codebase it derives from, if any. */
  base?: string;
  /** The published version; "0" until the first publish. */
  version: string;
  main: string;
  /** Published files: path -> sha256 of the content. */
  files: Record<string, string>;
  /** Drafts not yet published: path -> sha256, or null for a file erased in the draft. */
  edits: Record<string, string | null>;
  /** A draft entry point, published with the next version. */
  draftMain?: string;
  /**
   * The store's revision of the record this one was loaded as or last written as, for stores
   * shared by replicas (etcd): a write based on an older revision is refused with StoreConflict
   * instead of overwriting what another replica wrote.
   */
  revision?: string;
}

/**
 * Another replica changed the codebase since `revision` was read: the write was not made.
 * `current` is what the store holds now (undefined: the codebase was deleted).
 */
export class StoreConflict extends Error {
  constructor(readonly current: CodebaseRecord | undefined) {
    super('the codebase was changed by another writer');
  }
}

/**
 * The store could not be reached (or did not answer in time): the write was not acknowledged. It
 * may still have been made; a replica learns that from its watch, and a retry that finds it made
 * is answered as made. The repo answers 503 with Retry-After and keeps serving what it has.
 */
export class StoreUnavailable extends Error {
  constructor(message: string) {
    super(message);
  }
}

export interface RepoStore {
  /** Every codebase record with its drafts, for start-up. */
  loadAll(): Promise<CodebaseRecord[]>;
  /** One codebase record with its drafts as the store holds it now; undefined when there is none. */
  loadRecord(name: string): Promise<CodebaseRecord | undefined>;
  /**
   * Writes the record (without its drafts, which are kept apart) durably; on return a crash can no
   * longer lose it. `changed` names every path whose entry may differ from the record last written
   * for this codebase, so that a store writing differences need not compare the other paths; without
   * it every path is compared. Returns the record's new revision when the store keeps revisions;
   * throws StoreConflict when `record.revision` is no longer the stored one.
   */
  putRecord(record: CodebaseRecord, changed?: readonly string[]): Promise<string | undefined>;
  /**
   * Drafts are small records of their own, so writing one costs the same however large the
   * codebase is: sha of the draft content, or null for an erased file.
   */
  putDraft(codebase: string, path: string, sha: string | null): Promise<void>;
  /** Many drafts at once, durably; cheaper than one putDraft each (one directory sync). */
  putDrafts(codebase: string, drafts: [path: string, sha: string | null][]): Promise<void>;
  clearDrafts(codebase: string, paths: string[]): Promise<void>;
  /**
   * Optional, for stores where every write is a round trip to a quorum (etcd): the same as
   * putBlobs(blobs) then putRecord(record, changed), in one write when they fit in one.
   */
  putRecordWithBlobs?(record: CodebaseRecord, blobs: Buffer[], changed?: readonly string[]): Promise<string | undefined>;
  /** Removes the record and its drafts; with a revision, only if it is still the stored one (else StoreConflict). */
  deleteRecord(name: string, revision?: string): Promise<void>;
  /** Writes the blob durably (before any record refers to it); returns its sha256. */
  putBlob(content: Buffer): Promise<string>;
  /** Many blobs at once, durably; returns their sha256s in order. */
  putBlobs(contents: Buffer[]): Promise<string[]>;
  getBlob(sha: string): Promise<Buffer | undefined>;
  close(): Promise<void>;
}
